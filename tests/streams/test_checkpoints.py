"""The readings agent's checkpoint bookkeeping (streams.checkpoints), without a broker."""

from __future__ import annotations

from streams.checkpoints import Checkpoint


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_due_once_the_interval_has_passed_since_the_first_batch():
    clock = Clock()
    cp = Checkpoint(2.0, clock)
    assert not cp.due()  # nothing to acknowledge
    assert cp.processed(cp.epoch, ["a", "b"])
    cp.settle(["a", "b"])
    assert not cp.due()
    clock.now += 1.5
    cp.settle(["c"])  # a later batch does not restart the interval
    assert not cp.due()
    clock.now += 0.5
    assert cp.due()
    cp.done()
    assert (cp.stored, cp.settled, cp.due()) == ([], [], False)


def test_interval_zero_checkpoints_after_every_batch():
    cp = Checkpoint(0.0, Clock())
    cp.processed(cp.epoch, ["a"])
    cp.settle(["a"])
    assert cp.due()


def test_a_failure_asks_for_a_replay_only_when_batches_were_stored_since():
    cp = Checkpoint(2.0, Clock())
    cp.lost_live_states()
    assert not cp.replay_needed  # the table is the whole truth
    cp.processed(cp.epoch, ["a"])
    cp.lost_live_states()
    assert cp.replay_needed
    cp.done()
    assert not cp.replay_needed


def test_a_poison_message_is_acknowledged_but_never_replayed():
    cp = Checkpoint(2.0, Clock())
    cp.processed(cp.epoch, ["a"])
    cp.settle(["a", "poison"])  # containment settled it as a dead letter
    assert cp.stored == ["a"] and cp.settled == ["a", "poison"]


def test_a_rebalance_discards_the_batches_since_the_checkpoint():
    cp = Checkpoint(2.0, Clock())
    begun = cp.epoch
    cp.processed(begun, ["a"])
    cp.settle(["a"])
    cp.discard()  # the new owner reads them again from the committed offsets
    assert (cp.stored, cp.settled, cp.due()) == ([], [], False)
    assert not cp.processed(begun, ["b"])  # a batch begun before the rebalance
    assert cp.stored == []
