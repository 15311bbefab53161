"""The worker's garbage-collection schedule (streams.heap), in this process."""

from __future__ import annotations

import gc
import weakref

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


def _tracked(objects) -> bool:
    # gc.get_objects() lists the collectable generations, not the frozen one.
    ids = {id(o) for o in objects}
    return any(id(o) in ids for o in gc.get_objects())


def test_survivors_are_frozen_and_garbage_of_the_interval_is_collected():
    heap = HeapFreezer(600.0, Clock())
    kept = [Cycle() for _ in range(100)]
    gone = [weakref.ref(Cycle()) for _ in range(100)]  # cyclic garbage of this interval
    assert _tracked(kept)
    heap.after_checkpoint()
    assert not _tracked(kept)  # frozen: no collection walks them again
    assert all(ref() is None for ref in gone)
    assert all(c.me is c for c in kept)


def test_the_heap_is_thawed_and_collected_whole_on_schedule():
    clock = Clock()
    heap = HeapFreezer(600.0, clock)
    alive = Cycle()
    heap.after_checkpoint()  # frozen while alive
    ref = weakref.ref(alive)
    del alive  # now garbage, but frozen: no collection sees it
    clock.now = 599.0
    heap.after_checkpoint()
    assert ref() is not None
    clock.now = 600.0
    heap.after_checkpoint()  # thawed and collected whole
    assert ref() is None


def test_automatic_full_collections_become_rare():
    young, middle, _ = gc.get_threshold()
    collect_on_schedule()
    assert gc.get_threshold() == (young, middle, RARE_FULL_COLLECTIONS)
    assert gc.get_freeze_count() > 0
