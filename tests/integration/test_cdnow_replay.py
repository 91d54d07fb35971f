"""A real public data set replayed as it is: the CDNOW purchase log (1997-1998, 69,659 purchases
by 23,570 customers, shipped in the ``lifetimes`` wheel), declared in a catalogue of its own
(tests/integration/cdnow_rules/), through the real job on Kafka with RFM rules over windows up to
540 days; the memberships in Redis at the end of the data equal pandas' computation of the same
rules from the file.

Event times: the file has dates only, so each purchase is sent at noon UTC of its day plus k
minutes, k counting the customer's earlier purchases that day in file order (``ml/cdnow.py``).
Records go to Kafka in event-time order, as they would have arrived. "The end of the data" is
1998-07-01T00:00:00Z, the instant the last day ends: a last record (``replay_end``, declared in
the catalogue) brings the watermark exactly there, and the job keeps running, so that windows are
seen as of that instant (a bounded run ends with the largest watermark, when every window has
emptied).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from flink_jobs.ml.cdnow import cdnow_path, read_transactions, to_events

from .conftest import Scenario

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parent / "cdnow_rules"
END = pd.Timestamp("1998-07-01T00:00:00Z")
OUT_OF_ORDERNESS_MS = 5 * 60_000  # the scenario's events.out_of_orderness
SETTINGS = {
    "job.rules_path": str(RULES),
    "job.horizon": "540d",
    "events.earliest_event_time": "1997-01-01T00:00:00Z",
    "job.hot_reload": "false",
}


def _records() -> list[dict]:
    """The log as raw events of its own catalogue, in event-time order, and the end marker."""
    out = []
    for e in sorted(to_events(read_transactions()), key=lambda e: (e.event_time, int(e.event_id.split("-")[1]))):
        out.append(
            {
                "event_id": e.event_id,
                "customer_id": e.customer_id.removeprefix("cdnow-"),  # the file's id, as it is
                "event_type": "order",
                "event_time": pd.Timestamp(e.event_time, unit="ms", tz="UTC").isoformat().replace("+00:00", "Z"),
                "properties": {"quantity": e.properties["items"], "amount": e.properties["revenue"]},
            }
        )
    end_ms = int(END.timestamp() * 1000)
    # The source's watermark is the newest event time less the out-of-orderness and 1 ms.
    marker = end_ms + OUT_OF_ORDERNESS_MS + 1
    out.append({"event_id": "replay-end", "customer_id": "replay", "event_type": "replay_end", "event_time": marker})
    return out


def _expected() -> dict[str, set[str]]:
    """Each segment of cdnow_rules/cdnow.yaml, computed by pandas from the file as of END.

    A window of N days at END holds the purchases of END's day and the N - 1 days before it (a
    window over 35 days slides by a day: rules/README.md)."""
    df = pd.read_csv(cdnow_path(), sep=r"\s+", dtype={"customer_id": str})
    df["day"] = pd.to_datetime(df["date"].astype(str), format="%Y%m%d", utc=True)
    k = df.groupby(["customer_id", "day"]).cumcount()
    df["at"] = df["day"] + pd.Timedelta(hours=12) + pd.to_timedelta(k, unit="min")
    customers = pd.Index(df["customer_id"].unique())

    def window(days: int) -> pd.DataFrame:
        return df[df["day"] >= END - pd.Timedelta(days=days - 1)]

    def per_customer(series: pd.Series) -> pd.Series:
        return series.reindex(customers, fill_value=0)

    frequency = {n: per_customer(window(n).groupby("customer_id").size()) for n in (90, 365, 540)}
    monetary = {n: per_customer(window(n).groupby("customer_id")["dollar_value"].sum()) for n in (365, 540)}
    recency = END - df.groupby("customer_id")["at"].max()
    cds_180 = per_customer(window(180).groupby("customer_id")["number_of_cds"].sum())
    big_540 = per_customer(window(540)[window(540)["dollar_value"] >= 100].groupby("customer_id").size())

    def members(mask: pd.Series) -> set[str]:
        return set(mask[mask].index)

    return {
        "repeat_buyer_540d": members(frequency[540] >= 2),
        "high_value_540d": members(monetary[540] >= 500),
        "champion_365d": members(
            (recency.reindex(customers) <= pd.Timedelta(days=90)) & (frequency[365] >= 4) & (monetary[365] >= 200)
        ),
        "lapsed_270d": members(recency > pd.Timedelta(days=270)),
        "active_90d": members(frequency[90] >= 1),
        "collector_180d": members(cds_180 >= 10),
        "big_basket_540d": members(big_540 >= 2),
    }


def _memberships(scenario: Scenario) -> dict[str, set[str]]:
    client = scenario.redis()
    keys = [k for k in client.scan_iter(match=f"{scenario.prefix}cust:*", count=5000)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hkeys(key)
    out: dict[str, set[str]] = {}
    for key, segments in zip(keys, pipe.execute()):
        customer = key[len(f"{scenario.prefix}cust:") :]
        for segment in segments:
            out.setdefault(segment, set()).add(customer)
    return out


def _wait_until_settled(scenario: Scenario, produced: int, timeout: float = 300) -> dict[str, set[str]]:
    """The memberships once the job has committed every record and Redis stopped changing."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.errors import CoordinatorNotAvailableError

    admin = KafkaAdminClient(bootstrap_servers=scenario.stack.bootstrap)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            group = f"it-{scenario.name}"
            try:
                offsets = admin.list_group_offsets({group: None}).get(group, {})
            except CoordinatorNotAvailableError:
                # a fresh broker creates __consumer_offsets with the first group: retry
                offsets = {}
            committed = offsets.get(TopicPartition(scenario.topics["events"], 0))
            if committed is not None and committed.offset >= produced:
                break
            time.sleep(1)
        else:
            raise AssertionError("the job did not read the whole log in time")
    finally:
        admin.close()
    last = _memberships(scenario)
    while time.monotonic() < deadline:
        time.sleep(4)  # several checkpoints and watermark intervals
        now = _memberships(scenario)
        if now == last:
            return now
        last = now
    raise AssertionError("the memberships kept changing")


def test_the_cdnow_log_replayed_through_the_job_matches_pandas(scenario: Scenario):
    records = _records()
    scenario.produce(records)
    expected = _expected()
    job = scenario.start_unbounded(**SETTINGS)
    try:
        got = _wait_until_settled(scenario, len(records))
    finally:
        job.cancel().result()

    print(f"\nCDNOW at {END.isoformat()}: {len(records) - 1} purchases replayed")
    print(f"{'segment':<20} {'job':>7} {'pandas':>7}  equal")
    for segment, members in expected.items():
        print(f"{segment:<20} {len(got.get(segment, ())):>7} {len(members):>7}  {got.get(segment, set()) == members}")
    for segment, members in expected.items():
        job_only, pandas_only = got.get(segment, set()) - members, members - got.get(segment, set())
        assert not job_only and not pandas_only, (
            f"{segment}: {len(job_only)} only in the job (e.g. {sorted(job_only)[:5]}), "
            f"{len(pandas_only)} only in pandas (e.g. {sorted(pandas_only)[:5]})"
        )
    assert set(got) <= set(expected)
    # Every segment has members: the comparison is not between empty sets.
    assert all(len(m) > 100 for m in expected.values()), {s: len(m) for s, m in expected.items()}
    dead = scenario.read("dlq")
    assert dead == []
    assert scenario.read("late") == []
