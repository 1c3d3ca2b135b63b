"""Legacy flat routes answer in FEDn 0.9.5's value formats (spec §1.1, §1.2)."""

import re

from tests.api.factories import Network

# str(datetime) of a naive timestamp, as FEDn pushes onto control.model's model_trail.
PLAIN_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def test_model_trail_values_are_plain_str_datetimes(network: Network) -> None:
    seed = network.seed()
    network.child_model(seed["model"], "s")
    trail = network.api.get("/get_model_trail").json()
    assert len(trail) == 2
    for committed_at in trail.values():
        assert PLAIN_TIMESTAMP.match(committed_at), committed_at
