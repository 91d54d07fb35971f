"""``segments preview`` and ``segments explain``: try rules on a file of events before publishing.

Both run the same engine the job runs (through the local runner, with the same watermark and
timer semantics), so what a rule author sees here is what the job will do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable

from ..core.conditions import qualifying
from ..core.engine import EngineConfig, SegmentEngine
from ..core.model import Event, RuleSet, Segment, walk
from ..core.reference import History
from ..core.runner import LocalRunner
from ..core.scoring import Scorer


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class SegmentPreview:
    segment_id: str
    description: str
    members: list[str] = field(default_factory=list)  # at the end, sorted
    enters: int = 0
    exits: int = 0
    timeline: list[tuple[int, int, int, int]] = field(default_factory=list)  # (slice end, enters, exits, size)


@dataclass
class PreviewReport:
    rule_version: str
    start: int
    end: int
    customers: int
    events: int
    duplicates: int
    late: int
    segments: list[SegmentPreview]


def run_preview(
    rules: RuleSet,
    events: Iterable[Event],
    *,
    out_of_orderness: int,
    config: EngineConfig | None = None,
    scorer: Scorer | None = None,
    slices: int = 6,
) -> PreviewReport:
    """Replay the events in file order; memberships as of the last event time."""
    runner = LocalRunner(SegmentEngine(rules, config, scorer), out_of_orderness=out_of_orderness)
    first = last = None
    for event in events:
        runner.feed(event)
        first = event.event_time if first is None else min(first, event.event_time)
        last = event.event_time if last is None else max(last, event.event_time)
    if last is None:
        return PreviewReport(rules.version, 0, 0, 0, 0, 0, 0, [_empty(s) for s in rules.segments])
    runner.advance(last)
    assert first is not None
    width = max(1, (last - first) // slices + 1)
    by_segment = {s.id: SegmentPreview(s.id, s.description) for s in rules.segments}
    per_slice: dict[str, list[list[int]]] = {s.id: [[0, 0] for _ in range(slices)] for s in rules.segments}
    for change in runner.changes:
        preview = by_segment[change.segment_id]
        index = min(slices - 1, (change.event_time - first) // width)
        if change.kind == "enter":
            preview.enters += 1
            per_slice[change.segment_id][index][0] += 1
        else:
            preview.exits += 1
            per_slice[change.segment_id][index][1] += 1
    for sid, preview in by_segment.items():
        size = 0
        for i, (enters, exits) in enumerate(per_slice[sid]):
            size += enters - exits
            preview.timeline.append((min(last, first + (i + 1) * width - 1), enters, exits, size))
    for cid, state in runner.states.items():
        for sid in state.members:
            by_segment[sid].members.append(cid)
    for preview in by_segment.values():
        preview.members.sort()
    return PreviewReport(
        rule_version=rules.version,
        start=first,
        end=last,
        customers=len(runner.states),
        events=runner.stats.events,
        duplicates=runner.stats.duplicates,
        late=runner.stats.late,
        segments=[by_segment[s.id] for s in rules.segments],
    )


def _empty(segment) -> SegmentPreview:
    return SegmentPreview(segment.id, segment.description)


def render_preview(report: PreviewReport, samples: int = 5) -> str:
    lines = [
        f"rule set {report.rule_version}: {report.events} events of {report.customers} customers, "
        f"{iso(report.start)} to {iso(report.end)} UTC"
        + (f" ({report.duplicates} duplicates ignored, {report.late} late)" if report.duplicates or report.late else ""),
        "",
        f"{'segment':32} {'members':>8} {'enters':>7} {'exits':>7}  sample members",
    ]
    for p in report.segments:
        sample = ", ".join(p.members[:samples]) + (" ..." if len(p.members) > samples else "")
        lines.append(f"{p.segment_id:32} {len(p.members):>8} {p.enters:>7} {p.exits:>7}  {sample}")
    lines.append("")
    lines.append("over time (audience size at the end of each slice, +enters/-exits):")
    for p in report.segments:
        if not p.enters:
            continue
        cells = "  ".join(f"{size}(+{e}/-{x})" for _, e, x, size in p.timeline)
        lines.append(f"  {p.segment_id:30} {cells}")
    if report.segments and report.segments[0].timeline:
        ends = "  ".join(iso(t)[11:16] for t, *_ in report.segments[0].timeline)
        lines.append(f"  {'slice ends (UTC)':30} {ends}")
    return "\n".join(lines)


def explain_customer(
    rules: RuleSet,
    events: Iterable[Event],
    customer_id: str,
    *,
    out_of_orderness: int,
    config: EngineConfig | None = None,
    scorer: Scorer | None = None,
    at: int | None = None,
    max_events: int = 5,
) -> str:
    """Why the customer is or is not in each segment, with the events that count."""
    data = explain_data(rules, events, customer_id, out_of_orderness=out_of_orderness, config=config, scorer=scorer, at=at, max_events=max_events)
    if data is None:
        return f"no events for customer {customer_id!r}"
    lines = [f"customer {customer_id} at {iso(data['at'])} UTC ({data['events']} events, rule set {rules.version})"]
    for segment in data["segments"]:
        mark = "IN " if segment["member"] else "out"
        lines.append(f"  [{mark}] {segment['id']}: {segment['why']}")
        for event in segment["events"]:
            props = ", ".join(f"{k}={v}" for k, v in sorted(event["properties"].items()) if k != "session_id")
            lines.append(f"          {iso(event['event_time'])}  {event['event_type']:13} {props}  {event['note']}")
    if data["changes"]:
        lines.append("  changes:")
        for c in data["changes"]:
            lines.append(f"    {iso(c['event_time'])}  {c['kind']:5} {c['segment']}: {c['reason']}")
    return "\n".join(lines)


def explain_data(
    rules: RuleSet,
    events: Iterable[Event],
    customer_id: str,
    *,
    out_of_orderness: int,
    config: EngineConfig | None = None,
    scorer: Scorer | None = None,
    at: int | None = None,
    max_events: int = 5,
) -> dict | None:
    """``explain_customer`` as data (``--format json``): per segment, membership, why, and the
    events that count; the customer's changes over the replay. None without events."""
    mine = [e for e in events if e.customer_id == customer_id]
    if not mine:
        return None
    engine = SegmentEngine(rules, config, scorer)
    runner = LocalRunner(engine, out_of_orderness=out_of_orderness)
    runner.feed_all(mine)
    now = at if at is not None else max(e.event_time for e in mine)
    runner.advance(now)
    state = runner.states[customer_id]
    history = History(customer_id, mine, rules.catalog, scorer)
    by_id = rules.by_id()
    return {
        "customer_id": customer_id,
        "at": now,
        "rule_version": rules.version,
        "events": len(history.events),
        "segments": [
            {
                "id": sid,
                "member": member,
                "why": why,
                "events": [
                    {"event_time": e.event_time, "event_type": e.event_type, "properties": dict(e.properties), "note": note}
                    for e, note in _qualifying(by_id[sid], history, now)[:max_events]
                ],
            }
            for sid, member, why in engine.explain(state, now)
        ],
        "changes": [
            {"event_time": c.event_time, "kind": c.kind, "segment": c.segment_id, "reason": c.reason}
            for c in runner.changes
            if c.customer_id == customer_id
        ],
    }


def preview_data(report: PreviewReport) -> dict:
    """A preview as data (``--format json``): per segment its members, counts and timeline."""
    return {
        "rule_version": report.rule_version,
        "start": report.start,
        "end": report.end,
        "customers": report.customers,
        "events": report.events,
        "duplicates": report.duplicates,
        "late": report.late,
        "segments": [
            {
                "id": s.segment_id,
                "description": s.description,
                "members": s.members,
                "enters": s.enters,
                "exits": s.exits,
                "timeline": [{"until": end, "enters": n_in, "exits": n_out, "size": size} for end, n_in, n_out, size in s.timeline],
            }
            for s in report.segments
        ],
    }


def _qualifying(segment: Segment, history: History, now: int) -> list[tuple[Event, str]]:
    """The events behind each leaf condition of the segment, from the full history."""
    out = [found for c in walk(segment.condition) for found in qualifying(c, history, now)]
    seen: set[str] = set()
    unique = []
    for e, note in sorted(out, key=lambda x: x[0].sort_key(), reverse=True):
        if e.event_id not in seen:
            seen.add(e.event_id)
            unique.append((e, note))
    return unique
