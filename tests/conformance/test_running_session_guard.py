"""The package and the active model may not change while a session runs (a project rule).

FEDn 0.9.5 only refuses /set_package while instructing or monitoring; fedplane refuses every
route that would change the package or the active model, /set_initial_model included, since a
seed uploaded mid-session would become the parent of the session's next round.
"""

from tests.api.factories import Network, model_bytes, upload


def running_session(network: Network) -> None:
    from apps.sessions.choices import SessionStatus
    from apps.sessions.models import Session
    from apps.sessions.records import federation_holds_sync

    network.session("running")
    Session.objects.filter(session_id="running").update(status=SessionStatus.STARTED)
    federation_holds_sync()  # as the services do when a session starts


def test_set_initial_model_is_refused_while_a_session_runs(network: Network) -> None:
    seed = network.seed()
    running_session(network)
    response = network.api.post("/set_initial_model", {"file": upload("seed.npz", model_bytes())})
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "message": "A session is running (running); wait until it has ended or stop it.",
    }
    assert network.api.get("/get_latest_model").json() == {"model_id": seed["model"]}
    assert network.api.get("/api/v1/models/count").json() == 1


def test_set_initial_model_is_accepted_once_no_session_runs(network: Network) -> None:
    network.seed()
    network.session("created-only")
    response = network.api.post("/set_initial_model", {"file": upload("seed.npz", model_bytes())})
    assert response.json() == {"success": True, "message": "Initial model added successfully."}
