"""Seed uploads are checked header first: every hostile file gets a 400 JSON answer, nothing stored."""

import io
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as HttpClient
from django.urls import reverse
from rest_framework.test import APIClient

from apps.models.models import Model
from fedplane.tests import hostile_npz as hostile

pytestmark = pytest.mark.django_db

HOSTILE = {
    "bomb-by-declared-shape": (hostile.bomb_by_shape, "over the limit"),
    "bomb-by-compression-ratio": (hostile.bomb_by_ratio, "over the limit"),
    "header-disagrees-with-zip": (lambda: hostile.bomb_by_shape(consistent=False), "zip directory"),
    "wrong-magic": (hostile.wrong_magic, "not a valid .npy array header"),
    "pickled-member": (hostile.pickled_member, "object arrays hold pickled data"),
    "object-dtype": (hostile.object_dtype_header, "object arrays hold pickled data"),
    "structured-dtype": (hostile.structured, "structured dtypes are refused"),
    "string-dtype": (hostile.strings, "only bool, integer and float arrays"),
    "empty-archive": (hostile.empty_archive, "empty"),
    "not-a-zip": (lambda: b"GIF89a, not a model", "not an npz archive"),
    "truncated": (hostile.truncated, "not a readable npz archive"),
    "nan": (lambda: hostile.with_value(np.nan), "non-finite"),
    "inf": (lambda: hostile.with_value(np.inf), "non-finite"),
}


@pytest.fixture
def api(settings: Any) -> APIClient:
    settings.FEDN_JWT_SECRET_KEY = ""  # auth off, as FEDn without a JWT secret
    return APIClient()


def post_seed(api: APIClient, content: bytes) -> Any:
    handle = io.BytesIO(content)
    handle.name = "seed.npz"
    return api.post("/set_initial_model", {"file": handle}, format="multipart")


def stored_files(storage: Any) -> list[Path]:
    return [path for path in Path(storage.location).rglob("*") if path.is_file()]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_seed_is_refused_with_400_json_and_nothing_stored(
    api: APIClient, fs_storage: Any, case: str
) -> None:
    build, expected = HOSTILE[case]
    response = post_seed(api, build())
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False
    assert expected in body["message"], body
    assert not Model.objects.exists()
    assert stored_files(fs_storage) == []


def test_bomb_refusals_name_the_member_and_its_declared_shape(api: APIClient, fs_storage: Any) -> None:
    message = post_seed(api, hostile.bomb_by_ratio()).json()["message"]
    assert "'0.npy'" in message and "declared shape (805306368,)" in message and "float32" in message


def test_a_fedn_written_seed_is_accepted(api: APIClient, fs_storage: Any) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{"0": np.zeros((3, 2), dtype=np.float32), "1": np.float32(0.5)})
    response = post_seed(api, buffer.getvalue())
    assert response.status_code == 200, response.content
    model = Model.objects.get()
    assert model.active and [path.name for path in stored_files(fs_storage)] == [
        Path(model.artifact.name).name
    ]


def test_the_size_limit_is_a_setting(api: APIClient, fs_storage: Any, settings: Any) -> None:
    content = hostile.bomb_by_ratio(64 << 20, valid_crc=True)
    settings.FEDPLANE_MODEL_EXPANSION_FLOOR_BYTES = 1 << 20
    refused = post_seed(api, content)
    assert refused.status_code == 400 and "over the limit" in refused.json()["message"]
    settings.FEDPLANE_MODEL_EXPANSION_FLOOR_BYTES = 256 << 20
    assert post_seed(api, content).status_code == 200
    assert Model.objects.count() == 1


def test_uploading_a_bomb_allocates_about_its_file_size(api: APIClient, fs_storage: Any) -> None:
    """Python and numpy allocations while the whole request is served, against the 3 GiB it declares."""
    content = hostile.bomb_by_ratio(3 * hostile.GIB)
    tracemalloc.start()
    try:
        response = post_seed(api, content)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 400
    # The request holds the 3 MB upload a few times over (test client, multipart parser, spool).
    assert peak < 64 << 20, peak
    assert peak < 8 * len(content) + (8 << 20), (peak, len(content))


def test_admin_upload_refuses_a_bomb_with_the_reason(admin_client: HttpClient, fs_storage: Any) -> None:
    response = admin_client.post(
        reverse("admin:mlmodels_model_add"),
        {"upload": SimpleUploadedFile("seed.npz", hostile.bomb_by_ratio())},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert "over the limit" in response.content.decode()
    assert not Model.objects.exists()
    assert stored_files(fs_storage) == []


def test_parameters_of_a_small_file_declaring_large_arrays_are_refused(
    api: APIClient, fs_storage: Any, settings: Any
) -> None:
    """A 128 MiB seed of zeros weighs ~130 KB; as nested lists it would take gigabytes."""
    assert post_seed(api, hostile.bomb_by_ratio(128 << 20, valid_crc=True)).status_code == 200
    model = Model.objects.get()
    assert model.size < 1 << 20
    response = api.get(f"/api/v1/models/{model.model_id}/parameters")
    assert response.status_code == 400
    assert "134217728 bytes" in response.json()["message"]


def test_parameters_of_a_seed_are_its_layers(api: APIClient, fs_storage: Any) -> None:
    layers = {"0": np.arange(4.0).reshape(2, 2), "1": np.int32(7)}
    assert post_seed(api, hostile.savez(layers, compressed=True)).status_code == 200
    model = Model.objects.get()
    response = api.get(f"/api/v1/models/{model.model_id}/parameters")
    assert response.json() == {"array": [[[0.0, 1.0], [2.0, 3.0]], 7]}
