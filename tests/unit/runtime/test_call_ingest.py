"""The segment function's bookkeeping of ingestion times (for the latency metric), which needs
no Flink."""

from __future__ import annotations

from flink_jobs.core.model import Event
from flink_jobs.core.state import CustomerState
from flink_jobs.runtime.batch_engine import Call, DueIndex


def _event(n: int, t: int, ingested: int | None) -> Event:
    return Event(f"e{n}", "c1", "page_view", t, {}, ingested)


def test_ingestion_times_are_noted_for_the_events_a_step_will_apply():
    call = Call(DueIndex())
    state = CustomerState("c1")
    state.buffer = [_event(1, 10, 500), _event(2, 20, 700), _event(3, 40, 900)]  # sorted by time
    call.note_ingest(state, 20, [_event(4, 20, 600), _event(5, 15, None), _event(6, 30, 999)])
    # Up to the watermark (20): the latest ingestion per instant; none for events without one.
    assert call.ingest == {("c1", 10): 500, ("c1", 20): 700}
    call.note_ingest(CustomerState("c1"), 50, [_event(7, 30, 1_000), _event(8, 30, 800)])
    assert call.ingest[("c1", 30)] == 1_000
