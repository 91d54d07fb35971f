"""The batch engine without Flink: a dict for each batch key's customer states, a fake timer
service, an in-memory membership writer; batches in, outputs and state asserted (what the Flink
functions hand it and emit)."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import pytest

from flink_jobs.core.engine import EngineConfig
from flink_jobs.core.loader import load_rules_from_texts
from flink_jobs.core.state import decode_state
from flink_jobs.runtime import gc_policy
from flink_jobs.runtime.batch_engine import CATCH_UP_LAG, DLQ, GATE, LATE, BatchEngine, Output
from flink_jobs.runtime.batching import BatchRecord, batch_key, encode_batch
from flink_jobs.runtime.metrics import JobMetrics, MetricsConfig
from flink_jobs.runtime.redis_writer import ChangeTuple, RedisConfig
from flink_jobs.runtime.rule_files import ACTIVE_RULES
from flink_jobs.runtime.serde import ParseLimits

BATCH_KEYS = 4
CATALOG = (Path(__file__).resolve().parents[3] / "rules" / "catalog.yaml").read_text()
MINUTE = 60_000

RULES = """
version: 1
segments:
  - id: viewer
    description: viewed a product
    owner: tests
    when:
      count: product_view
      within: 1h
      at_least: 1
  - id: abandoned_cart
    description: cart add, no purchase within 15 minutes
    owner: tests
    when:
      event: cart_add
      not_followed_by: purchase
      within: 15m
"""
BUYER = """
version: 1
segments:
  - id: buyer
    description: bought something
    owner: tests
    when:
      count: purchase
      within: 1h
      at_least: 1
"""


@pytest.fixture(autouse=True)
def _collector_left_as_found():
    yield
    # open() installs the process-wide GC policy; later tests expect Python's own collector.
    gc_policy.install(0).uninstall()


class Store(dict):
    """One batch key's customer states, as Flink's MapState is used."""

    def put(self, key: str, value: bytes) -> None:
        self[key] = value


class Files(dict):
    """The rule files' broadcast state."""

    def put(self, key: str, value: str) -> None:
        self[key] = value

    def remove(self, key: str) -> None:
        del self[key]

    def contains(self, key: str) -> bool:
        return key in self


class Timers:
    def __init__(self, watermark: int) -> None:
        self.watermark = watermark
        self.event_time: list[int] = []
        self.processing_time: list[int] = []

    def current_watermark(self) -> int:
        return self.watermark

    def register_event_time_timer(self, timestamp: int) -> None:
        self.event_time.append(timestamp)

    def register_processing_time_timer(self, timestamp: int) -> None:
        self.processing_time.append(timestamp)


class Writer:
    """Membership changes as the Redis writer gets them, in order."""

    def __init__(self) -> None:
        self.written: list[ChangeTuple] = []

    def write(self, changes) -> int:
        changes = list(changes)
        self.written.extend(changes)
        return len(changes)

    def close(self) -> None:
        pass


def _engine(rules: str = RULES, **kw) -> tuple[BatchEngine, Writer, JobMetrics]:
    engine = BatchEngine(
        load_rules_from_texts({"catalog.yaml": CATALOG, "rules.yaml": rules}),
        EngineConfig(),
        limits=ParseLimits(),
        redis=RedisConfig("redis://unused", "seg:", 0),
        batch_keys=BATCH_KEYS,
        placed_keys=list(range(BATCH_KEYS)),  # Flink key i stands for batch key i here
        source_topic="events",
        metrics_config=MetricsConfig(False, "127.0.0.1", "", 9260, 9299, "", False, "9250"),
        full_gc_interval=0,  # Python's own collector: the policy is tested on its own
        **kw,
    )
    writer, metrics = Writer(), JobMetrics()
    engine.open(metrics=metrics, writer=writer)
    return engine, writer, metrics


def _event(n: int, customer: str, kind: str, at: int, **props) -> BatchRecord:
    value = {"event_id": f"e{n}", "customer_id": customer, "event_type": kind, "event_time": at, "properties": props}
    return BatchRecord(0, n, at, customer.encode(), json.dumps(value).encode())


def _key(customer: str) -> int:
    return batch_key(customer, BATCH_KEYS)


def _neighbour(customer: str) -> str:
    """Another customer of the same batch key."""
    return next(c for c in (f"c{i}" for i in range(100)) if _key(c) == _key(customer) and c != customer)


def _changes(outputs: list[Output]) -> list[tuple[str, str, str]]:
    records = [json.loads(value) for tag, _, value in outputs if tag is None]
    return [(r["customer_id"], r["segment"], r["kind"]) for r in records]


def _now() -> int:
    """A watermark this near the wall clock means live."""
    return int(time.time() * 1000)


OLD = _now() - 10 * CATCH_UP_LAG  # catching up, however long the tests take


def test_live_changes_are_written_to_redis_at_the_end_marker_then_emitted():
    now = _now()
    engine, writer, _ = _engine()
    store, timers = Store(), Timers(now)
    key = _key("alice")
    out = list(engine.batch(key, encode_batch([_event(1, "alice", "product_view", now - 5)]), now, store, timers))
    assert out == [] and writer.written == []  # held for the release's end marker
    end = list(engine.batch(key, None, now, store, timers))
    assert _changes(end) == [("alice", "viewer", "enter")]
    assert [w[:5] for w in writer.written] == [("alice", "viewer", "enter", now - 5, None)]
    assert json.loads(writer.written[0][5])["reason"].startswith("count(product_view")
    assert [(tag, k) for tag, k, _ in end] == [(None, "alice")]  # keyed by customer


def test_catching_up_states_and_changes_wait_for_the_sync_marker():
    engine, writer, _ = _engine()
    store, timers = Store(), Timers(OLD)
    key = _key("bob")
    out = list(engine.batch(key, encode_batch([_event(1, "bob", "product_view", OLD - 5)]), OLD, store, timers))
    assert out == [] and list(engine.batch(key, None, OLD, store, timers)) == []
    assert store == {} and writer.written == []
    synced = list(engine.batch(key, b"", OLD, store, timers))  # before a checkpoint barrier
    assert _changes(synced) == [("bob", "viewer", "enter")]
    assert set(store) == {"bob"}
    assert set(decode_state(store["bob"]).members) == {"viewer"}


def test_live_states_are_written_within_the_write_behind():
    now = _now()
    engine, _, _ = _engine(write_behind=1)
    store, timers = Store(), Timers(now)
    key = _key("carol")
    list(engine.batch(key, encode_batch([_event(1, "carol", "product_view", now - 5)]), now, store, timers))
    time.sleep(0.01)
    list(engine.batch(key, encode_batch([_event(2, "carol", "page_view", now - 4)]), now, store, timers))
    assert decode_state(store["carol"]).members.keys() == {"viewer"}


def test_invalid_and_misrouted_records_go_to_the_dead_letter_output_at_once():
    now = _now()
    engine, _, metrics = _engine()
    store, timers = Store(), Timers(now)
    key = _key("dave")
    other = next(c for c in (f"c{i}" for i in range(100)) if _key(c) != key)
    broken = BatchRecord(3, 7, now, b"dave", b"{not json")
    out = list(engine.batch(key, encode_batch([broken, _event(2, other, "page_view", now - 5)]), now, store, timers))
    assert [(tag, k) for tag, k, _ in out] == [(DLQ, "dave"), (DLQ, other)]
    first, second = (json.loads(v) for _, _, v in out)
    assert first["code"] == "not_json" and first["source"]["partition"] == 3 and first["source"]["offset"] == 7
    assert second["code"] == "routing"


def test_a_deadline_fires_through_the_keys_event_time_timer():
    now = _now()
    engine, writer, _ = _engine()
    added = now - 15 * MINUTE + 2_000  # the deadline comes live: its change is written at once
    store, timers = Store(), Timers(added)
    key = _key("erin")
    list(engine.batch(key, encode_batch([_event(1, "erin", "cart_add", added)]), added, store, timers))
    deadline = added + 15 * MINUTE
    assert timers.event_time == [deadline]  # one timer for the key, at its earliest instant
    timers.watermark = deadline
    out = list(engine.timer(key, store, timers))  # a timer's changes are written at once
    assert _changes(out) == [("erin", "abandoned_cart", "enter")]
    assert writer.written[-1][:4] == ("erin", "abandoned_cart", "enter", deadline)


def test_events_behind_the_customers_clock_go_to_the_late_output():
    now = _now()
    engine, _, _ = _engine()
    store, timers = Store(), Timers(now)
    key = _key("finn")
    list(engine.batch(key, encode_batch([_event(1, "finn", "page_view", now - 5)]), now, store, timers))
    out = list(engine.batch(key, encode_batch([_event(2, "finn", "page_view", now - MINUTE)]), now, store, timers))
    assert [(tag, k) for tag, k, _ in out] == [(LATE, "finn")]
    assert json.loads(out[0][2])["event"]["event_id"] == "e2"


def test_duplicates_alone_leave_the_state_untouched():
    engine, _, metrics = _engine(write_behind=1)
    store, timers = Store(), Timers(OLD)
    key = _key("gail")
    record = _event(1, "gail", "page_view", OLD - 5)
    list(engine.batch(key, encode_batch([record]), OLD, store, timers))
    list(engine.batch(key, b"", OLD, store, timers))
    written = dict(store)
    list(engine.batch(key, encode_batch([record]), OLD, store, timers))
    list(engine.batch(key, b"", OLD, store, timers))
    assert store == written


def test_published_rules_replace_the_set_and_reach_every_customer_on_the_keys_next_call():
    engine, _, metrics = _engine()
    files, store, timers = Files(), Store(), Timers(OLD)
    key = _key("hana")
    list(engine.batch(key, encode_batch([_event(1, "hana", "product_view", OLD - 5)]), OLD, store, timers))
    started = engine.rule_version
    files.put("catalog.yaml", CATALOG)  # published before: a set is its rules and its catalogue
    engine.rule_file(files, "buyer.yaml", BUYER)
    assert engine.rule_version != started and set(files) == {"catalog.yaml", "buyer.yaml", ACTIVE_RULES}
    # hana sends nothing new: the key's next call brings her to the new rules all the same.
    other = _neighbour("hana")
    list(engine.batch(key, encode_batch([_event(2, other, "page_view", OLD - 4)]), OLD, store, timers))
    synced = _changes(list(engine.batch(key, b"", OLD, store, timers)))
    assert synced == [("hana", "viewer", "enter"), ("hana", "viewer", "exit")]


def test_a_set_that_does_not_load_is_rejected_and_the_last_good_one_stays():
    engine, _, metrics = _engine()
    files = Files({"catalog.yaml": CATALOG})
    engine.rule_file(files, "buyer.yaml", BUYER)
    good = engine.rule_version
    engine.rule_file(files, "broken.yaml", "version: 1\nsegments:\n  - id: Bad Id\n")
    assert engine.rule_version == good
    assert metrics.registry.get_sample_value("segments_rules_rejected_total") == 1
    engine.rule_file(files, "broken.yaml", None)  # deleting the broken file: the good set again
    assert engine.rule_version == good
    engine.rule_file(files, "buyer.yaml", None)
    engine.rule_file(files, "catalog.yaml", None)  # no file left: the rules the job started with
    assert engine.rule_version == _engine()[0].rule_version and files == {}


def test_a_restored_instance_takes_the_rules_in_use_from_the_files_store():
    first, _, _ = _engine()
    files = Files({"catalog.yaml": CATALOG})
    first.rule_file(files, "buyer.yaml", BUYER)
    restored, _, _ = _engine()  # a new instance, as after a restore: started with RULES
    assert restored.rule_version != first.rule_version
    restored.restore_rules(files)
    assert restored.rule_version == first.rule_version


@pytest.mark.parametrize("name", ["", ACTIVE_RULES])
def test_records_that_name_no_rule_file_are_ignored(name):
    engine, _, _ = _engine()
    files = Files()
    before = engine.rule_version
    engine.rule_file(files, name, BUYER)
    assert engine.rule_version == before and files == {}


def _announced(outputs) -> list[dict]:
    """The event gate's announcements (the status topic carries the rules' and models' status too)."""
    return [json.loads(value) for tag, key, value in outputs if tag == GATE and key.startswith("gate/")]


def test_the_catalogue_in_use_is_announced_for_the_sources_gate_once_per_change():
    engine, _, _ = _engine(gate_key="gate/job/run1")
    store, timers = Store(), Timers(OLD)
    key = _key("ida")
    first = list(engine.batch(key, encode_batch([_event(1, "ida", "product_view", OLD - 5)]), OLD, store, timers))
    [started] = _announced(first)
    assert [k for tag, k, _ in first if tag == GATE] == ["rules/job", "gate/job/run1"]  # the rules it starts with, the gate
    assert started["rule_version"] == engine.rule_version
    assert set(started["gate"]["types"]) >= {"page_view", "cart_remove"}
    assert _announced(engine.batch(key, None, OLD, store, timers)) == []  # once

    # A catalogue taken from the rules topic: announced at once, from the broadcast side.
    without = CATALOG.replace("    cart_remove:", "    basket_remove:")
    files = Files({"rules.yaml": RULES})
    engine.rule_file(files, "catalog.yaml", without)
    [taken] = _announced(engine.announcement())
    assert taken["catalog_version"] != started["catalog_version"]
    assert "cart_remove" not in taken["gate"]["types"] and "basket_remove" in taken["gate"]["types"]
    assert _announced(engine.announcement()) == []


def test_without_hot_reload_nothing_is_announced():
    engine, _, _ = _engine()
    out = list(engine.batch(_key("jo"), encode_batch([_event(1, "jo", "product_view", OLD - 5)]), OLD, Store(), Timers(OLD)))
    assert _announced(out) == []


# ---- models published on the rules topic -------------------------------------------------------------

PROPENSITY = """
version: 1
segments:
  - id: likely_buyer
    description: the propensity model expects a purchase
    owner: tests
    when:
      score: purchase_propensity
      at_least: 0.9
"""


def _model_engine():
    from flink_jobs.ml.observed import load_scorer

    rules = load_rules_from_texts({"catalog.yaml": CATALOG, "rules.yaml": PROPENSITY})
    return _engine(PROPENSITY, gate_key="gate/job/run1", scorer=functools.partial(load_scorer, "", rules.catalog.scores))


def _status(outputs) -> list[tuple[str, dict]]:
    return [(k, json.loads(v)) for tag, k, v in outputs if tag == GATE and k.startswith("model/")]


def test_a_published_model_scores_at_once_is_reported_and_named_in_change_records(tmp_path):
    from flink_jobs.ml.published import model_record
    from tests.unit.ml.published_models import constant_propensity

    engine, _, _ = _model_engine()
    store, key = Store(), _key("bo")
    now = _now()

    def buy(n: int, at: int) -> list[dict]:
        out = list(engine.batch(key, encode_batch([_event(n, "bo", "purchase", at, order_id=f"o{n}", revenue=40, items=1)]), at + 1, store, Timers(at + 1)))
        out += list(engine.batch(key, None, at + 1, store, Timers(at + 1)))
        return [json.loads(v) for tag, _, v in out if tag is None]

    assert buy(1, now - 60_000) == []  # the shipped model: well below 0.9 after one purchase
    files = Files({"catalog.yaml": CATALOG, "rules.yaml": PROPENSITY})
    name, value, _ = model_record(constant_propensity(tmp_path, 0.95, "2.0.0"))
    engine.rule_file(files, name, value)
    [(status_key, status)] = _status(engine.announcement())
    assert status_key == "model/job/purchase_propensity"
    assert (status["state"], status["version"]) == ("accepted", "2.0.0")
    assert files[name] == value  # kept for a restore

    [entered] = buy(2, now - 30_000)
    assert (entered["segment"], entered["kind"]) == ("likely_buyer", "enter")
    assert entered["scores"]["purchase_propensity"] == pytest.approx(0.95)
    assert entered["model_versions"]["purchase_propensity"] == "2.0.0"
    assert engine._held.model_versions["purchase_propensity"] == "2.0.0"  # for the next records too

    # A broken one: rejected and reported, the published model keeps scoring.
    engine.rule_file(files, name, value.replace('"version":"2.0.0"', '"version":"3.0.0"').replace('"sha256":"', '"sha256":"0'))
    [(_, rejected)] = _status(engine.announcement())
    assert (rejected["state"], rejected["version"]) == ("rejected", None)
    assert "does not match its card" in rejected["detail"]
    assert files[name] == value

    # A restored instance scores with the published model, not the shipped one.
    restored, _, _ = _model_engine()
    restored.restore_rules(files)
    assert restored._scorer.versions["purchase_propensity"] == "2.0.0"


# ---- rule sets published as one unit, and what the job says about them ---------------------------------


def _rules_status(outputs) -> list[dict]:
    """The rules status records, after the one every instance writes at start ("running")."""
    return [s for s in (json.loads(v) for tag, k, v in outputs if tag == GATE and k == "rules/job") if s["state"] != "running"]


def _set(files: dict[str, str], request: str) -> str:
    return json.dumps({"files": files, "request": request, "published_by": "ana", "published_at": 1_700_000_000_000})


def test_a_rule_set_published_as_one_unit_replaces_all_files_or_nothing():
    from flink_jobs.runtime.rule_files import RULE_SET_KEY

    engine, _, _ = _engine(gate_key="gate/job/run1")
    files = Files({"catalog.yaml": CATALOG, "rules.yaml": RULES, "old.yaml": BUYER.replace("buyer", "old_buyer")})
    engine.rule_file(files, RULE_SET_KEY, _set({"catalog.yaml": CATALOG, "buyer.yaml": BUYER}, "r1"))
    [accepted] = _rules_status(engine.announcement())
    assert (accepted["state"], accepted["request"], accepted["published_by"], accepted["segments"]) == ("accepted", "r1", "ana", 1)
    assert accepted["version"] == engine.rule_version and accepted["active"]["published_at"] == 1_700_000_000_000
    assert sorted(k for k in files if k != ACTIVE_RULES) == ["buyer.yaml", "catalog.yaml"]  # exactly the set's files

    # A set that does not load: rejected with its located problems; nothing of it is kept.
    broken = {"catalog.yaml": CATALOG, "buyer.yaml": BUYER, "bad.yaml": "version: 1\nsegments:\n  - id: Bad Id\n"}
    engine.rule_file(files, RULE_SET_KEY, _set(broken, "r2"))
    [rejected] = _rules_status(engine.announcement())
    assert (rejected["state"], rejected["request"], rejected["version"]) == ("rejected", "r2", accepted["version"])
    assert "bad.yaml:3:" in rejected["problems"]
    assert "bad.yaml" not in files and engine.rule_version == accepted["version"]


def test_every_parallel_task_writes_the_same_answer():
    from flink_jobs.runtime.rule_files import RULE_SET_KEY

    answers = []
    for _ in range(2):
        engine, _, _ = _engine(gate_key="gate/job/run1")
        engine.rule_file(Files(), RULE_SET_KEY, _set({"catalog.yaml": CATALOG, "buyer.yaml": BUYER}, "r1"))
        answers.append([v for tag, k, v in engine.announcement() if k == "rules/job"])
    assert answers[0] == answers[1] and [json.loads(a)["state"] for a in answers[0]] == ["running", "accepted"]


def test_a_segment_removed_by_a_published_set_ends_when_the_key_takes_the_set():
    from flink_jobs.runtime.rule_files import RULE_SET_KEY

    engine, writer, _ = _engine(gate_key="gate/job/run1")
    store, key = Store(), _key("vi")
    list(engine.batch(key, encode_batch([_event(1, "vi", "product_view", OLD - 5)]), OLD, store, Timers(OLD)))
    list(engine.batch(key, b"", OLD, store, Timers(OLD)))  # the sync marker: the change is written
    engine.rule_file(Files(), RULE_SET_KEY, _set({"catalog.yaml": CATALOG, "buyer.yaml": BUYER}, "r1"))
    later = OLD + 10 * MINUTE
    neighbour = _neighbour("vi")
    out = list(engine.batch(key, encode_batch([_event(2, neighbour, "page_view", later - 5)]), later, store, Timers(later)))
    out += list(engine.batch(key, b"", later, store, Timers(later)))
    [removed] = [json.loads(v) for tag, k, v in out if tag is None and k == "vi"]
    assert (removed["segment"], removed["kind"], removed["event_time"]) == ("viewer", "exit", later)
    assert removed["rule_version"] == engine.rule_version and "segment removed from the rules" in removed["reason"]


def test_a_published_set_reaches_a_quiet_key_at_its_next_sync_marker():
    from flink_jobs.runtime.rule_files import RULE_SET_KEY

    engine, _, _ = _engine(gate_key="gate/job/run1")
    store, key = Store(), _key("qu")
    list(engine.batch(key, encode_batch([_event(1, "qu", "product_view", OLD - 5)]), OLD, store, Timers(OLD)))
    list(engine.batch(key, b"", OLD, store, Timers(OLD)))
    engine.rule_file(Files(), RULE_SET_KEY, _set({"catalog.yaml": CATALOG, "buyer.yaml": BUYER}, "r1"))
    # No record for this key: the checkpoint's sync marker alone moves its customers.
    later = OLD + 5 * MINUTE
    out = list(engine.batch(key, b"", later, store, Timers(later)))
    [removed] = [json.loads(v) for tag, k, v in out if tag is None and k == "qu"]
    assert (removed["segment"], removed["kind"], removed["event_time"]) == ("viewer", "exit", later)
    assert decode_state(store["qu"]).rule_version == engine._engine.state_version  # written at the marker
