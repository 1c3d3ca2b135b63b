"""The combiner process's collector pacing: survivors frozen after each full collection, cycles
among them still reclaimed by the periodic collection over everything."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from combiner_node.gcpacing import CollectorPacing
from combiner_node.tests.conftest import wait_for


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def pacing() -> Iterator[CollectorPacing]:
    pacer = CollectorPacing(full_collection_seconds=3600)
    pacer.start()
    yield pacer
    pacer.stop()


def test_survivors_of_a_full_collection_are_frozen(pacing: CollectorPacing) -> None:
    kept = [Node() for _ in range(1000)]
    frozen_before = gc.get_freeze_count()
    freezes = pacing.freezes
    gc.collect()
    wait_for(lambda: pacing.freezes > freezes)
    # The next full collection no longer walks them.
    assert gc.get_freeze_count() >= frozen_before + len(kept)


def test_a_cycle_frozen_before_it_became_garbage_is_reclaimed_by_the_full_collection(
    pacing: CollectorPacing,
) -> None:
    first, second = Node(), Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    freezes = pacing.freezes
    gc.collect()
    wait_for(lambda: pacing.freezes > freezes)
    del first, second
    gc.collect()
    assert gone() is not None  # frozen: ordinary collections leave it
    assert pacing.collect_all() > 0
    assert gone() is None


def test_stop_leaves_nothing_frozen_or_registered() -> None:
    pacer = CollectorPacing()
    pacer.start()
    assert gc.get_freeze_count() > 0
    pacer.stop()
    assert gc.get_freeze_count() == 0
    assert all(getattr(callback, "__self__", None) is not pacer for callback in gc.callbacks)
