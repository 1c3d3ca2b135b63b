"""The compute package admin: listing, upload through package_create, activation, download."""

import gzip
import io
import tarfile
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as HttpClient
from django.urls import reverse

from apps.packages.models import ComputePackage
from apps.packages.services import package_create

pytestmark = pytest.mark.django_db

FEDN_YAML = (
    b"entry_points:\n  train:\n    command: python train.py\n  validate:\n    command: python validate.py\n"
)


def package_archive() -> bytes:
    """A small valid compute package: fedn.yaml and a script in one top folder.

    The gzip header's time is fixed, so two calls give the same bytes whenever they run.
    """
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w") as archive,
    ):
        for name, content in (("package/fedn.yaml", FEDN_YAML), ("package/train.py", b"print('train')\n")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def make_package(name: str, file_name: str = "package.tgz") -> ComputePackage:
    upload = SimpleUploadedFile(file_name, package_archive())
    return package_create(upload=upload, helper="numpyhelper", name=name, description=f"{name} package")


def changelist() -> str:
    return reverse("admin:packages_computepackage_changelist")


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_changelist_and_change_page_show_packages_with_download_links(
    admin_client: HttpClient, fs_storage: Any
) -> None:
    package = make_package("digits")
    response = admin_client.get(changelist())
    assert response.status_code == 200
    body = response.content.decode()
    assert "digits" in body
    assert f"/download_package?name={package.storage_file_name}" in body
    assert 'class="fp-badge fp-ok"' in body

    response = admin_client.get(reverse("admin:packages_computepackage_change", args=[package.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert package.sha256 in body
    assert str(package.package_id) in body


def test_download_link_streams_the_archive(admin_client: HttpClient, fs_storage: Any) -> None:
    package = make_package("digits")
    response = admin_client.get(reverse("legacy-download-package"), {"name": package.storage_file_name})
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == package_archive()


def test_search_and_active_filter(admin_client: HttpClient, fs_storage: Any) -> None:
    make_package("alpha")
    make_package("bravo")  # the newest upload is the active one
    body = admin_client.get(changelist(), {"q": "alpha"}).content.decode()
    assert ">alpha<" in body and ">bravo<" not in body

    body = admin_client.get(changelist(), {"active__exact": "1"}).content.decode()
    assert ">bravo<" in body and ">alpha<" not in body


def test_upload_form_stores_and_activates_the_package(admin_client: HttpClient, fs_storage: Any) -> None:
    response = admin_client.post(
        reverse("admin:packages_computepackage_add"),
        {
            "upload": SimpleUploadedFile("mnist.tar.gz", package_archive()),
            "helper": "numpyhelper",
            "name": "mnist",
            "description": "from the admin",
        },
        follow=True,
    )
    assert response.status_code == 200
    package = ComputePackage.objects.get()
    assert package.active and package.name == "mnist" and package.file_name == "mnist.tar.gz"
    assert package.description == "from the admin"
    assert fs_storage.exists(package.file.name)
    assert any("stored and activated" in text for text in messages_of(response))


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("notes.txt", b"hello", "is not a compute package"),
        ("empty.tgz", b"", "The submitted file is empty."),
        ("broken.tgz", b"not a tarball at all", "is not a readable tar:gz archive"),
    ],
)
def test_upload_form_refuses_a_bad_package_with_the_reason(
    admin_client: HttpClient, fs_storage: Any, file_name: str, content: bytes, message: str
) -> None:
    response = admin_client.post(
        reverse("admin:packages_computepackage_add"),
        {"upload": SimpleUploadedFile(file_name, content), "helper": "numpyhelper", "name": "bad"},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors
    assert message in response.content.decode()
    assert not ComputePackage.objects.exists()


def test_activate_action_switches_the_active_package(admin_client: HttpClient, fs_storage: Any) -> None:
    older = make_package("older")
    newer = make_package("newer")
    response = admin_client.post(
        changelist(), {"action": "activate", "_selected_action": [older.pk]}, follow=True
    )
    older.refresh_from_db()
    newer.refresh_from_db()
    assert older.active and not newer.active
    assert "Compute package older is now active." in messages_of(response)


def test_activate_action_wants_exactly_one_package(admin_client: HttpClient, fs_storage: Any) -> None:
    first, second = make_package("first"), make_package("second")
    response = admin_client.post(
        changelist(), {"action": "activate", "_selected_action": [first.pk, second.pk]}, follow=True
    )
    assert "Select exactly one compute package to activate." in messages_of(response)
    assert ComputePackage.objects.get(active=True) == second


def test_name_and_description_are_editable_but_the_artifact_is_not(
    admin_client: HttpClient, fs_storage: Any
) -> None:
    package = make_package("digits")
    response = admin_client.post(
        reverse("admin:packages_computepackage_change", args=[package.pk]),
        {"name": "renamed", "description": "new text", "sha256": "0" * 64},
    )
    assert response.status_code == 302
    stored = ComputePackage.objects.get(pk=package.pk)
    assert (stored.name, stored.description, stored.sha256) == ("renamed", "new text", package.sha256)
