"""Package and model files through the API on both stores: files (the default) and the real S3 server.

Also: the OpenAPI schema and Swagger UI render, and the browsable API renders every list as HTML.
"""

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import StreamingHttpResponse

from .factories import Network, model_bytes, package_bytes, sha256, upload

pytestmark = pytest.mark.django_db

# Incompressible, so the archive spans several 1 MiB download chunks.
BIG_FILE = os.urandom(3 * 1024 * 1024 + 123)


def media_files() -> set[Path]:
    root = Path(settings.MEDIA_ROOT)
    return {path for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def download(network: Network, url: str) -> tuple[bytes, int, Any]:
    response = network.api.get(url)
    assert response.status_code == 200, response.content
    assert isinstance(response, StreamingHttpResponse)
    chunks = list(response.streaming_content)
    return b"".join(chunks), len(chunks), response


def round_trip(network: Network) -> dict[str, bytes]:
    """Upload a package and a seed, download both; returns the stored key -> bytes."""
    package_data = package_bytes({"train.py": b"print(1)\n", "data.bin": BIG_FILE})
    package = network.package(package_data)
    body, chunks, response = download(network, "/download_package")
    assert body == package_data
    assert chunks >= 3  # streamed in 1 MiB pieces, not read whole
    assert response["Content-Length"] == str(len(package_data))
    assert network.api.get("/get_package_checksum").json() == {"checksum": sha256(body)}
    assert package["checksum"] == sha256(package_data)

    layers = [np.random.default_rng(1).standard_normal((300, 300)), np.arange(10, dtype=np.int32)]
    model_data = model_bytes(layers)
    seed = network.seed(model_data)
    body, _, response = download(network, f"/api/v1/models/{seed['model']}/download")
    assert body == model_data
    assert sha256(body) == seed["checksum"]
    parameters = network.api.get(f"/api/v1/models/{seed['model']}/parameters").json()["array"]
    assert np.allclose(np.array(parameters[0]), layers[0])
    assert parameters[1] == list(range(10))
    return {
        f"packages/{package['storage_file_name']}": package_data,
        f"models/{seed['model']}.npz": model_data,
    }


def test_round_trip_on_files(network: Network, artifact_store: Any) -> None:
    stored = round_trip(network)
    for key, data in stored.items():
        assert (Path(artifact_store.location) / key).read_bytes() == data
    # Nothing went to the default media folder (which other test processes may be writing to).
    assert not {Path(settings.MEDIA_ROOT) / key for key in stored} & media_files()


@pytest.mark.s3
def test_round_trip_on_s3(network: Network, s3_storage: Any, s3_settings: dict[str, str]) -> None:
    import boto3
    from botocore.config import Config

    stored = round_trip(network)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_settings["endpoint_url"] or None,
        region_name=s3_settings["region"],
        aws_access_key_id=s3_settings["access_key"],
        aws_secret_access_key=s3_settings["secret_key"],
        config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30),
    )
    for key, data in stored.items():
        body = s3.get_object(Bucket=s3_settings["bucket"], Key=f"{s3_storage.location}/{key}")["Body"].read()
        assert body == data, key
    # Nothing went to local disk on the way.
    assert not {Path(settings.MEDIA_ROOT) / key for key in stored} & media_files()


def test_refused_upload_leaves_no_object(network: Network, artifact_store: Any) -> None:
    response = network.api.post(
        "/set_initial_model", {"file": upload("x.npz", b"PK\x03\x04garbage")}, format="multipart"
    )
    assert response.status_code == 400
    assert not any(Path(artifact_store.location).rglob("*"))


# ---------------------------------------------------------------- schema, docs and the browsable API


def test_openapi_schema_renders(api: Any) -> None:
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for route in ("/api/v1/clients/", "/api/v1/models/{id}/ancestors/", "/add_client/", "/set_package/"):
        assert any(path.rstrip("/") == route.rstrip("/") for path in paths), route
    assert "fednJWT" in schema["components"]["securitySchemes"]


def test_swagger_ui_serves(api: Any) -> None:
    response = api.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content


LIST_URLS = [
    f"/api/v1/{e}/" for e in ("clients", "combiners", "models", "packages", "rounds", "sessions")
] + [
    "/api/v1/statuses/",
    "/api/v1/validations/",
]


def test_browsable_api_renders_every_list(populated: Network, settings: Any) -> None:
    settings.FEDN_JWT_SECRET_KEY = "on"
    staff = get_user_model().objects.create_user("operator", password="pw", is_staff=True)
    populated.api.force_login(staff)
    for url in LIST_URLS:
        response = populated.api.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, url
        assert response["Content-Type"].startswith("text/html"), url
        assert b"browsable-api" in response.content or b"Django REST framework" in response.content, url
