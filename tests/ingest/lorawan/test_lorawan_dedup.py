"""Frame deduplication: bursts, late copies, counter resets, bounded memory."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.lorawan.dedup import FrameDeduplicator, merge_uplinks
from ingest.lorawan.uplink import GatewayRx, Uplink

T0 = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)


def up(
    f_cnt: int = 1,
    gateway: str = "gw-a",
    rssi: float | None = -100,
    snr: float | None = 5.0,
    *,
    dev_eui: str = "70b3d57ed0000001",
    payload: bytes = b"\x01\x02",
    at: float = 0.0,
    dev_addr: str | None = "00189440",
    session_id: str | None = None,
    rx: tuple[GatewayRx, ...] | None = None,
) -> Uplink:
    return Uplink(
        network="chirpstack",
        dev_eui=dev_eui,
        f_cnt=f_cnt,
        f_port=10,
        payload=payload,
        received_at=T0 + timedelta(seconds=at),
        rx=rx if rx is not None else (GatewayRx(gateway, rssi, snr),),
        dev_addr=dev_addr,
        session_id=session_id,
    )


def test_multi_gateway_burst_becomes_one_frame_with_best_signal() -> None:
    dedup = FrameDeduplicator(window_s=0.2)
    assert dedup.offer(up(gateway="gw-a", rssi=-110, snr=-3.0), now=0.00) is None
    assert dedup.offer(up(gateway="gw-b", rssi=-95, snr=2.5), now=0.05) is None
    assert dedup.offer(up(gateway="gw-c", rssi=-101, snr=8.0, at=0.4), now=0.12) is None
    assert dedup.flush(now=0.19) == []
    (frame,) = dedup.flush(now=0.21)
    assert frame.gateway_count == 3
    assert frame.gateway_ids == ("gw-a", "gw-b", "gw-c")
    assert (frame.best_rssi, frame.best_snr) == (-95, 8.0)
    assert frame.copies == 3
    assert frame.received_at == T0  # the first copy's time
    assert dedup.stats.merged == 2 and dedup.stats.emitted == 1
    assert dedup.flush(now=5.0) == []


def test_copies_naming_the_same_gateway_keep_its_stronger_reception() -> None:
    merged = merge_uplinks(
        up(rx=(GatewayRx("gw-a", -120, 1.0), GatewayRx("gw-b", -90, 3.0))),
        up(rx=(GatewayRx("gw-a", -100, 6.0),)),
    )
    assert merged.rx == (GatewayRx("gw-a", -100, 6.0), GatewayRx("gw-b", -90, 3.0))
    assert merged.gateway_count == 2


def test_late_copy_after_emission_is_dropped_and_counted() -> None:
    dedup = FrameDeduplicator(window_s=0.2, memory_s=600)
    dedup.offer(up(), now=0.0)
    assert len(dedup.flush(now=0.3)) == 1
    # An MQTT redelivery after a reconnect, minutes later: same event JSON.
    assert dedup.offer(up(gateway="gw-b"), now=180.0) is None
    assert dedup.flush(now=181.0) == []
    assert dedup.stats.late == 1


def test_different_frame_counters_are_different_frames() -> None:
    dedup = FrameDeduplicator(window_s=0.2)
    for f_cnt in range(5):
        dedup.offer(up(f_cnt=f_cnt, at=f_cnt * 60), now=f_cnt * 0.01)
    assert [u.f_cnt for u in dedup.flush(now=1.0)] == [0, 1, 2, 3, 4]


def test_counter_reset_after_rejoin_is_a_new_frame() -> None:
    dedup = FrameDeduplicator(window_s=0.2, memory_s=600)
    dedup.offer(up(f_cnt=0, payload=b"\x10", at=0), now=0.0)
    dedup.offer(up(f_cnt=1, payload=b"\x11", at=60), now=60.0)
    assert len(dedup.flush(now=61.0)) == 2
    # Rejoin 2 minutes later: new DevAddr, counter back to 0, identical payload.
    dedup.offer(up(f_cnt=0, payload=b"\x10", at=120, dev_addr="01abcdef"), now=120.0)
    (frame,) = dedup.flush(now=121.0)
    assert frame.dev_addr == "01abcdef"
    assert dedup.stats.counter_resets == 1 and dedup.stats.late == 0


def test_counter_reset_is_told_apart_by_session_payload_or_time() -> None:
    dedup = FrameDeduplicator(window_s=0.2, memory_s=3600, max_skew_s=30)
    dedup.offer(up(f_cnt=3, session_id="AAA=", dev_addr=None), now=0.0)
    dedup.flush(now=1.0)
    # Unknown DevAddr but a different TTS session key: new session.
    dedup.offer(up(f_cnt=3, session_id="BBB=", dev_addr=None, at=100), now=100.0)
    # Same session marker, different payload: a different frame.
    dedup.offer(up(f_cnt=3, session_id="BBB=", dev_addr=None, payload=b"\xff", at=200), now=200.0)
    # No session marker at all, same payload, but long after: an ABP reboot.
    dedup.offer(up(f_cnt=3, session_id=None, dev_addr=None, payload=b"\xff", at=900), now=900.0)
    assert len(dedup.flush(now=1000.0)) == 3
    assert dedup.stats.counter_resets == 3


def test_reset_inside_the_hold_window_emits_both_frames() -> None:
    dedup = FrameDeduplicator(window_s=0.2)
    dedup.offer(up(f_cnt=0, payload=b"\x01"), now=0.0)
    dedup.offer(up(f_cnt=0, payload=b"\x02", dev_addr="01abcdef", at=0.1), now=0.1)
    assert [u.payload for u in dedup.flush(now=0.1)] == [b"\x01"]  # pushed out early
    assert [u.payload for u in dedup.flush(now=0.4)] == [b"\x02"]


def test_memory_is_evicted_by_time() -> None:
    dedup = FrameDeduplicator(window_s=0.2, memory_s=10)
    for i in range(100):
        dedup.offer(up(f_cnt=i), now=i * 0.001)
    dedup.flush(now=1.0)
    assert len(dedup) == 100
    dedup.flush(now=20.0)
    assert len(dedup) == 0
    # Forgotten: a very late copy is a new frame again.
    dedup.offer(up(f_cnt=5), now=21.0)
    assert len(dedup.flush(now=22.0)) == 1


def test_memory_bound_never_loses_a_held_frame() -> None:
    dedup = FrameDeduplicator(window_s=5.0, memory_s=60, max_frames=10)
    for i in range(25):
        dedup.offer(up(f_cnt=i), now=i * 0.01)
    assert len(dedup) == 10
    assert dedup.stats.forced == 15
    emitted = dedup.flush(now=0.3) + dedup.flush(now=10.0)
    assert sorted(u.f_cnt for u in emitted) == list(range(25))


def test_window_zero_emits_the_first_copy_immediately() -> None:
    dedup = FrameDeduplicator(window_s=0)
    first = up(gateway="gw-a")
    assert dedup.offer(first, now=0.0) is first
    assert dedup.offer(up(gateway="gw-b"), now=0.01) is None
    assert dedup.flush(now=1.0) == []
    assert dedup.stats.late == 1


def test_next_deadline_and_drain() -> None:
    dedup = FrameDeduplicator(window_s=0.2)
    assert dedup.next_deadline() is None
    dedup.offer(up(f_cnt=1), now=1.0)
    dedup.offer(up(f_cnt=2), now=1.1)
    assert dedup.next_deadline() == pytest.approx(1.2)
    assert dedup.pending == 2
    assert [u.f_cnt for u in dedup.drain()] == [1, 2]
    assert dedup.pending == 0 and dedup.next_deadline() is None


def test_default_clock_is_used_when_now_is_omitted() -> None:
    clock = iter([0.0, 0.05, 0.5]).__next__
    dedup = FrameDeduplicator(window_s=0.2, clock=clock)
    dedup.offer(up(gateway="gw-a"))
    dedup.offer(up(gateway="gw-b"))
    (frame,) = dedup.flush()
    assert frame.gateway_count == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"window_s": -1}, {"window_s": 10, "memory_s": 5}, {"max_frames": 0}, {"max_skew_s": -1}],
)
def test_invalid_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FrameDeduplicator(**kwargs)


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 4), st.sampled_from(["a", "b", "c"])),
        max_size=60,
    )
)
def test_every_frame_comes_out_exactly_once(events: list[tuple[int, int, str]]) -> None:
    """Any interleaving of copies: one output per (device, f_cnt), merged per the window."""
    window, step_s = 0.2, 0.05
    dedup = FrameDeduplicator(window_s=window)
    out: list[Uplink] = []
    # Model: a copy merges while its frame is held, i.e. unless the flush at the
    # previous step already emitted it (first_seen + window <= previous now).
    first_seen: dict[tuple[str, int], float] = {}
    expected: dict[tuple[str, int], list[str]] = {}
    previous_now = -1.0
    for step, (device, f_cnt, gateway) in enumerate(events):
        now = step * step_s
        key = (f"{device:016x}", f_cnt)
        if key not in first_seen:
            first_seen[key] = now
            expected[key] = [f"gw-{gateway}"]
        elif first_seen[key] + window > previous_now:
            expected[key].append(f"gw-{gateway}")
        dedup.offer(up(f_cnt=f_cnt, gateway=f"gw-{gateway}", dev_eui=key[0], at=now), now=now)
        out += dedup.flush(now=now)
        previous_now = now
    out += dedup.drain()
    keys = [(u.dev_eui, u.f_cnt) for u in out]
    assert len(keys) == len(set(keys)) == len(expected)
    for frame in out:
        heard = expected[(frame.dev_eui, frame.f_cnt)]
        assert set(frame.gateway_ids) == set(heard)
        assert frame.copies == len(heard)
    late = sum(1 for _ in events) - sum(len(v) for v in expected.values())
    assert dedup.stats.late == late


def test_emitted_frames_are_slimmed_in_memory() -> None:
    dedup = FrameDeduplicator(window_s=0.2)
    dedup.offer(dataclasses.replace(up(), decoded={"a": 1}), now=0.0)
    (frame,) = dedup.flush(now=1.0)
    assert frame.decoded == {"a": 1} and frame.rx  # the caller gets everything
    remembered = dedup._frames[(frame.dev_eui, frame.f_cnt)]
    # Only the identity tuple stays; the uplink and its copies are released.
    assert remembered.uplink is None and remembered.copies is None
    assert remembered.identity[1] == frame.payload
