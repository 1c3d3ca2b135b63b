"""The controller's reduce checks each combiner's model against the round's global model first."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from apps.models.models import Model
from apps.sessions import orchestration
from apps.sessions.choices import RoundStatus, SessionStatus, SessionStep
from apps.sessions.models import CombinerReport, Session
from apps.sessions.tests.test_orchestration import SHAPES, npz_bytes, running_session, upload_seed, with_round
from combiner_node.tests.conftest import load_model
from controlplane import artifacts
from fedplane.tests import hostile_npz as hostile

pytestmark = pytest.mark.django_db


def layers_bytes(*layers: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{str(i): layer for i, layer in enumerate(layers)})
    return buffer.getvalue()


def reducing_session(tmp_path: Path, models: dict[str, bytes]) -> Session:
    """A session at its reduce, with one report per combiner whose model holds the given bytes."""
    seed = upload_seed()
    session = running_session(step=SessionStep.REDUCING, seed=seed)
    current = with_round(session, sorted(models))
    current.round_config = {**current.round_config, "model_id": str(seed.model_id)}
    current.save(update_fields=["round_config"])
    for combiner, content in models.items():
        model_id = str(uuid.uuid4())
        local = tmp_path / f"{model_id}.npz"
        local.write_bytes(content)
        artifacts.save(orchestration.artifact_key(model_id), local)
        CombinerReport.objects.create(
            round=current, combiner=combiner, model_id=model_id, num_examples=10, report={"participants": []}
        )
    return session


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ({"north": layers_bytes(np.zeros((2, 3)), np.zeros(2))}, "has shape (2, 3)"),
        ({"north": layers_bytes(np.zeros((3, 2), dtype=np.int64), np.zeros(2))}, "has dtype int64"),
        ({"north": layers_bytes(np.zeros((3, 2)))}, "has 1 layers"),
        ({"north": hostile.pickled_member()}, "object arrays hold pickled data"),
        ({"north": npz_bytes(1.0), "south": layers_bytes(np.zeros((3, 2)), np.zeros(5))}, "has shape (5,)"),
        (
            {"north": npz_bytes(1.0), "south": layers_bytes(np.full((3, 2), np.nan), np.zeros(2))},
            "non-finite",
        ),
        ({"north": layers_bytes(np.full((3, 2), np.inf), np.zeros(2))}, "non-finite"),
        ({"north": npz_bytes(1.0), "south": hostile.bomb_by_ratio()}, "has 1 layers"),
    ],
    ids=[
        "one-combiner-other-shape",
        "one-combiner-other-dtype",
        "one-combiner-other-layer-count",
        "one-combiner-pickled-member",
        "two-combiners-other-shape",
        "two-combiners-nan",
        "one-combiner-inf",
        "two-combiners-bomb",
    ],
)
def test_a_combined_model_unlike_the_global_model_fails_the_session_and_commits_nothing(
    fs_storage: Any, tmp_path: Path, models: dict[str, bytes], expected: str
) -> None:
    session = reducing_session(tmp_path, models)
    models_before = Model.objects.count()

    assert orchestration.session_advance(session_pk=session.pk) is None

    session.refresh_from_db()
    assert session.status == SessionStatus.FAILED
    assert expected in session.status_reason, session.status_reason
    bad = next(name for name, content in models.items() if content != npz_bytes(1.0))
    assert f"the model of combiner {bad}" in session.status_reason
    assert Model.objects.count() == models_before
    assert session.current_round is not None and session.current_round.status == RoundStatus.FAILED


def test_models_like_the_global_model_are_averaged_and_committed(fs_storage: Any, tmp_path: Path) -> None:
    session = reducing_session(tmp_path, {"north": npz_bytes(1.0), "south": npz_bytes(3.0)})

    orchestration.session_advance(session_pk=session.pk)

    session.refresh_from_db()
    assert session.status == SessionStatus.STARTED and session.rounds_completed == 1
    model = Model.objects.get(active=True)
    combined = load_model(Path(fs_storage.path(model.artifact.name)))
    assert [layer.shape for layer in combined] == SHAPES
    np.testing.assert_allclose(combined[0], 2.0)


def test_the_reduce_keeps_the_layout_of_the_model_it_makes_for_the_next_rounds_check(
    fs_storage: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The global model of round n+1 is the model round n's reduce made: its layout is known."""
    monkeypatch.setattr(orchestration, "_layouts", {})
    downloaded: list[str] = []
    real_download = artifacts.download

    def recorded_download(key: str, path: Path) -> None:
        downloaded.append(key)
        real_download(key, path)

    monkeypatch.setattr(artifacts, "download", recorded_download)
    session = reducing_session(tmp_path, {"north": npz_bytes(1.0), "south": npz_bytes(3.0)})
    reduced_round = session.current_round
    assert reduced_round is not None
    seed = Model.objects.find(reduced_round.round_config["model_id"])
    assert seed is not None
    orchestration.session_advance(session_pk=session.pk)
    assert seed.artifact.name in downloaded  # the first reduce reads the seed's headers
    made = Model.objects.get(active=True)
    next_round = reduced_round
    next_round.round_config = {**next_round.round_config, "model_id": str(made.model_id)}

    downloaded.clear()
    spec = orchestration.round_model_spec(next_round, tmp_path)

    assert downloaded == []
    assert [tuple(shape) for shape in spec.shapes] == [tuple(shape) for shape in SHAPES]
