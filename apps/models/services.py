"""Global models: seed upload, commit, the active pointer, and lineage walks."""

import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from apps.models.models import Model, artifact_key
from controlplane import artifacts
from controlplane.errors import DomainError
from controlplane.federation import federation_refusal
from fedplane.npzcheck import ModelFileError, SizeLimits, check_model_file
from fedplane.numpyhelper import open_layers

DEFAULT_LINEAGE_LIMIT = 10


class ModelError(DomainError):
    """The model file or request is refused; the message says why."""


def seed_size_limits() -> SizeLimits:
    return SizeLimits(
        max_expansion=settings.FEDPLANE_MODEL_MAX_EXPANSION,
        floor_bytes=settings.FEDPLANE_MODEL_EXPANSION_FLOOR_BYTES,
        max_bytes=settings.FEDPLANE_MODEL_MAX_BYTES,
    )


def validate_npz(path: Path) -> int:
    """Check a numpyhelper model before reading it; returns the layer count.

    Headers first (names "0".."n-1", plain numeric arrays, sizes that match the zip directory and
    fit the size limits), then the values, streamed one block at a time: no NaN or infinity.
    """
    try:
        return check_model_file(path, limits=seed_size_limits()).layers
    except ModelFileError as exc:
        raise ModelError(f"The model file is refused: {exc}") from exc


def model_parameters(*, model: Model, max_bytes: int) -> list[Any]:
    """Each layer of a stored model as nested lists, read through the checked reader.

    Refused when the arrays declare more than `max_bytes`: a small file of zeros may declare far
    more than it weighs, and nested lists take several times the arrays' size.
    """
    with artifacts.local_copy(model.artifact.name, suffix=".npz") as path:
        try:
            with open_layers(path) as reader:
                if reader.declared_bytes > max_bytes:
                    raise ModelError(
                        f"The model's arrays take {reader.declared_bytes} bytes; download it instead of "
                        "listing its weights."
                    )
                return [reader[index].tolist() for index in range(len(reader))]
        except ModelFileError as exc:
            raise ModelError(f"The stored model cannot be read: {exc}") from exc


def model_create_seed(*, upload: UploadedFile) -> Model:
    """Store an uploaded seed model and make it the active model (FEDn's set_initial_model)."""
    # A new active model mid-session would become the parent of the session's next round.
    refuse_change_while_held()
    model_id = uuid.uuid4()
    key = artifact_key(model_id)
    try:
        with artifacts.spool_upload(upload, settings.FEDPLANE_MAX_UPLOAD_BYTES) as spooled:
            if spooled.size == 0:
                raise ModelError("The uploaded file is empty.")
            validate_npz(spooled.path)
            artifacts.save(key, spooled.path)
    except ValueError as exc:  # e.g. an upload over the size limit
        raise ModelError(str(exc)) from exc
    return model_commit(model_id=model_id, key=key, size=spooled.size, sha256=spooled.sha256, session_id=None)


def model_commit(
    *,
    model_id: uuid.UUID,
    key: str,
    size: int,
    sha256: str,
    session_id: str | None,
    parent: Model | None = None,
    make_active: bool = True,
) -> Model:
    """Record a stored artifact as a global model; inside a session its parent is the active model."""
    try:
        with transaction.atomic():
            if parent is None and session_id is not None:
                parent = model_get_active()
            if make_active:
                Model.objects.filter(active=True).update(active=False)
            return Model.objects.create(
                model_id=model_id,
                parent=parent,
                session_id=session_id,
                artifact=key,
                size=size,
                sha256=sha256,
                active=make_active,
            )
    except Exception:
        artifacts.delete(key)
        raise


def refuse_change_while_held() -> None:
    """The active model stays put while a session holds the federation."""
    refusal = federation_refusal()
    if refusal:
        raise ModelError(refusal)


@transaction.atomic
def model_set_active(*, model: Model) -> Model:
    """Point FEDn's current model at `model`; refused while a session runs (it would break lineage)."""
    refuse_change_while_held()
    Model.objects.filter(active=True).exclude(pk=model.pk).update(active=False)
    Model.objects.filter(pk=model.pk).update(active=True)
    model.active = True
    return model


def model_get_active() -> Model | None:
    return Model.objects.filter(active=True).first()


def model_get_initial() -> Model | None:
    return Model.objects.order_by("committed_at", "pk").first()


def model_ancestors(
    model: Model, *, limit: int = DEFAULT_LINEAGE_LIMIT, include_self: bool = False
) -> list[Model]:
    """Up to `limit` parents, nearest first; with include_self the model itself leads.

    As in FEDn, the limit counts parents only: include_self adds the model on top of them.
    """
    parents: list[Model] = []
    current = model
    seen = {model.pk}
    while len(parents) < limit and current.parent_id is not None:
        parent = Model.objects.filter(model_id=current.parent_id).first()
        if parent is None or parent.pk in seen:
            break
        parents.append(parent)
        seen.add(parent.pk)
        current = parent
    return [model, *parents] if include_self else parents


def model_descendants(model: Model, *, limit: int = DEFAULT_LINEAGE_LIMIT) -> list[Model]:
    """Follows the first-committed child downward; returned deepest first, as FEDn does."""
    lineage: list[Model] = []
    current = model
    seen = {model.pk}
    while len(lineage) < limit:
        child = Model.objects.filter(parent_id=current.model_id).order_by("committed_at", "pk").first()
        if child is None or child.pk in seen:
            break
        lineage.append(child)
        seen.add(child.pk)
        current = child
    return list(reversed(lineage))


def model_trail() -> list[Model]:
    """Every global model in commit order (FEDn's model_trail)."""
    return list(Model.objects.order_by("committed_at", "pk"))
