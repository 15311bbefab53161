"""The worker's garbage-collection schedule (streams.heap), in this process."""

from __future__ import annotations

import gc

import pytest

from streams.heap import RARE_FULL_COLLECTIONS, HeapFreezer, collect_on_schedule


@pytest.fixture(autouse=True)
def restore_gc():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_survivors_are_frozen_and_garbage_of_the_interval_is_collected():
    heap = HeapFreezer(600.0, Clock())
    kept = [Cycle() for _ in range(100)]
    gone = [Cycle() for _ in range(100)]
    del gone  # cyclic garbage of this interval, e.g. messages just acknowledged
    before = gc.get_freeze_count()
    heap.after_checkpoint()
    assert gc.get_freeze_count() >= before + len(kept)
    assert gc.collect() == 0  # nothing left for a full collection to find
    assert all(c.me is c for c in kept)


def test_the_heap_is_thawed_and_collected_whole_on_schedule():
    clock = Clock()
    heap = HeapFreezer(600.0, clock)
    alive = [Cycle()]
    heap.after_checkpoint()  # frozen while alive
    del alive  # now garbage, but frozen: no collection sees it
    clock.now = 599.0
    heap.after_checkpoint()
    frozen = gc.get_freeze_count()
    clock.now = 600.0
    heap.after_checkpoint()  # thawed, collected, frozen again without it
    assert gc.get_freeze_count() < frozen


def test_automatic_full_collections_become_rare():
    young, middle, _ = gc.get_threshold()
    collect_on_schedule()
    assert gc.get_threshold() == (young, middle, RARE_FULL_COLLECTIONS)
    assert gc.get_freeze_count() > 0
