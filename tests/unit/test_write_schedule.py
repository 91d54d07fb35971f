"""The segment function's bookkeeping that needs no Flink: when changed states are written, and
which ingestion times the latency metric keeps."""

from __future__ import annotations

from flink_jobs.core.model import Event
from flink_jobs.core.state import CustomerState
from flink_jobs.functions import _Call, _DueIndex, _WriteSchedule


def test_states_wait_write_behind_until_the_first_checkpoint_and_with_checkpoints_off():
    assert _WriteSchedule(1.0, 30.0).delay(100.0) == 1.0
    off = _WriteSchedule(1.0, 0.0)
    off.marker(100.0)
    assert off.delay(101.0) == 1.0


def test_waits_shrink_to_write_behind_as_the_next_checkpoint_nears():
    schedule = _WriteSchedule(1.0, 30.0)
    schedule.marker(100.0)  # the next checkpoint is expected at 130
    assert [schedule.delay(t) for t in (100.0, 110.0, 120.0, 127.0, 129.0)] == [15.0, 10.0, 5.0, 1.5, 1.0]
    # A checkpoint later than expected: write_behind until its marker comes.
    assert schedule.delay(140.0) == 1.0
    schedule.marker(141.0)
    assert schedule.delay(141.0) == 15.0


def test_a_change_is_written_before_the_next_checkpoint_unless_it_came_within_write_behind_of_it():
    schedule = _WriteSchedule(1.0, 10.0)
    schedule.marker(0.0)
    for tenth in range(100):
        now = tenth / 10
        latest = now + schedule.delay(now)  # the random spread only makes it earlier
        assert latest <= 10.0 or latest <= now + 1.0


def _event(n: int, t: int, ingested: int | None) -> Event:
    return Event(f"e{n}", "c1", "page_view", t, {}, ingested)


def test_ingestion_times_are_noted_for_the_events_a_step_will_apply():
    call = _Call(_DueIndex())
    state = CustomerState("c1")
    state.buffer = [_event(1, 10, 500), _event(2, 20, 700), _event(3, 40, 900)]  # sorted by time
    call.note_ingest(state, 20, [_event(4, 20, 600), _event(5, 15, None), _event(6, 30, 999)])
    # Up to the watermark (20): the latest ingestion per instant; none for events without one.
    assert call.ingest == {("c1", 10): 500, ("c1", 20): 700}
    call.note_ingest(CustomerState("c1"), 50, [_event(7, 30, 1_000), _event(8, 30, 800)])
    assert call.ingest[("c1", 30)] == 1_000
