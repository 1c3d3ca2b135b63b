"""The model admin: listing with lineage links, seed upload through model_create_seed, activation."""

import io
import uuid
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as HttpClient
from django.urls import reverse

from apps.models.models import Model
from apps.models.services import model_commit, model_create_seed

pytestmark = pytest.mark.django_db


def npz_bytes(*layers: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    layers = layers or (np.zeros((2, 3)), np.ones(3))
    np.savez(buffer, **{str(index): layer for index, layer in enumerate(layers)})
    return buffer.getvalue()


def make_seed() -> Model:
    return model_create_seed(upload=SimpleUploadedFile("seed.npz", npz_bytes()))


def make_child(parent: Model, session_id: str) -> Model:
    """A global model as a session commits it (artifact key shared with the parent is fine here)."""
    return model_commit(
        model_id=uuid.uuid4(),
        key=parent.artifact.name,
        size=parent.size,
        sha256=parent.sha256,
        session_id=session_id,
        parent=parent,
    )


def changelist() -> str:
    return reverse("admin:mlmodels_model_changelist")


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_changelist_and_change_page_link_lineage_session_and_artifact(
    admin_client: HttpClient, fs_storage: Any
) -> None:
    seed = make_seed()
    child = make_child(seed, "session-a")
    body = admin_client.get(changelist()).content.decode()
    assert str(seed.model_id) in body and str(child.model_id) in body
    assert reverse("model-download", args=[child.model_id]) in body
    assert reverse("admin:mlmodels_model_change", args=[seed.pk]) in body  # child -> parent
    assert "?session_id=session-a" in body

    response = admin_client.get(reverse("admin:mlmodels_model_change", args=[seed.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert seed.sha256 in body
    assert f"?parent__exact={seed.model_id}" in body and "1 child model" in body

    # The children link filters the changelist to the child.
    body = admin_client.get(changelist(), {"parent__exact": str(seed.model_id)}).content.decode()
    assert str(child.model_id) in body and f">{seed.model_id}<" not in body


def test_download_link_streams_the_npz(admin_client: HttpClient, fs_storage: Any) -> None:
    seed = make_seed()
    response = admin_client.get(reverse("model-download", args=[seed.model_id]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == npz_bytes()


def test_search_and_filters(admin_client: HttpClient, fs_storage: Any) -> None:
    seed = make_seed()
    child = make_child(seed, "session-a")
    body = admin_client.get(changelist(), {"q": str(seed.model_id)}).content.decode()
    assert f">{seed.model_id}<" in body and f">{child.model_id}<" not in body

    body = admin_client.get(changelist(), {"active__exact": "1"}).content.decode()
    assert f">{child.model_id}<" in body and f">{seed.model_id}<" not in body

    body = admin_client.get(changelist(), {"session_id": "session-a"}).content.decode()
    assert f">{child.model_id}<" in body and f">{seed.model_id}<" not in body


def test_seed_upload_form_stores_and_activates_the_model(admin_client: HttpClient, fs_storage: Any) -> None:
    response = admin_client.post(
        reverse("admin:mlmodels_model_add"),
        {"upload": SimpleUploadedFile("seed.npz", npz_bytes(np.arange(6.0)))},
        follow=True,
    )
    assert response.status_code == 200
    model = Model.objects.get()
    assert model.active and model.parent is None
    assert fs_storage.exists(model.artifact.name)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"plain text, not a zip", "not an npz archive"),
        (npz_bytes(np.array(["a", "b"])), "only bool, integer and float arrays are accepted"),
    ],
)
def test_seed_upload_form_refuses_a_bad_model_with_the_reason(
    admin_client: HttpClient, fs_storage: Any, content: bytes, message: str
) -> None:
    response = admin_client.post(
        reverse("admin:mlmodels_model_add"), {"upload": SimpleUploadedFile("seed.npz", content)}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert message in response.content.decode()
    assert not Model.objects.exists()


def test_set_active_action(admin_client: HttpClient, fs_storage: Any) -> None:
    seed = make_seed()
    child = make_child(seed, "session-a")
    response = admin_client.post(
        changelist(), {"action": "set_active", "_selected_action": [seed.pk]}, follow=True
    )
    seed.refresh_from_db()
    child.refresh_from_db()
    assert seed.active and not child.active
    assert f"Model {seed.model_id} is now the active model." in messages_of(response)

    response = admin_client.post(
        changelist(), {"action": "set_active", "_selected_action": [seed.pk, child.pk]}, follow=True
    )
    assert "Select exactly one model to make active." in messages_of(response)


def test_only_the_name_is_editable(admin_client: HttpClient, fs_storage: Any) -> None:
    seed = make_seed()
    response = admin_client.post(
        reverse("admin:mlmodels_model_change", args=[seed.pk]), {"name": "baseline", "sha256": "0" * 64}
    )
    assert response.status_code == 302
    stored = Model.objects.get(pk=seed.pk)
    assert (stored.name, stored.sha256) == ("baseline", seed.sha256)
