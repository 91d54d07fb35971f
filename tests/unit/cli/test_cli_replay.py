"""`segments generate | preview | explain` on small, hand-written event files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from flink_jobs.cli import main

CATALOG = Path(__file__).resolve().parents[3] / "rules" / "catalog.yaml"

RULES = """\
version: 1
segments:
  - id: repeat_viewer
    description: viewed products more than twice in 10 minutes
    owner: tests
    when:
      count: product_view
      within: 10m
      greater_than: 2
  - id: abandoned_cart
    description: cart add without checkout within 15 minutes
    owner: tests
    when:
      event: cart_add
      not_followed_by: [checkout, purchase]
      within: 15m
      match_on: cart_id
"""


def _write(tmp_path, events):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    shutil.copy(CATALOG, tmp_path / "rules" / "catalog.yaml")  # the shipped example's events
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in events] + ["{broken"]
    path.write_text("\n".join(lines) + "\n")
    return str(tmp_path / "rules"), str(path)


def _ev(n, customer, kind, minute, **props):
    return {"event_id": f"e{n}", "customer_id": customer, "event_type": kind, "event_time": 1_767_225_600_000 + minute * 60_000, "properties": props}


EVENTS = [
    _ev(1, "ann", "product_view", 0, product_id="p1"),
    _ev(2, "ann", "product_view", 1, product_id="p1"),
    _ev(3, "ann", "product_view", 2, product_id="p2"),
    _ev(4, "bob", "cart_add", 3, cart_id="k1", cart_value=20),
    _ev(5, "bob", "page_view", 30),
    _ev(2, "ann", "product_view", 1, product_id="p1"),  # a duplicate
]


def test_preview_shows_audience_enters_exits_and_members(tmp_path, capsys):
    rules, events = _write(tmp_path, EVENTS)
    assert main(["preview", "--rules", rules, "--events", events, "--slices", "2"]) == 0
    out, err = capsys.readouterr()
    assert "events.jsonl:7: skipped: not JSON" in err
    lines = out.splitlines()
    assert lines[0].startswith("rule set rs-") and "6 events of 2 customers" in lines[0] and "1 duplicates ignored" in lines[0]
    # ann entered at minute 2 and left when her first view slid out (minute 10); bob's cart was
    # abandoned at minute 18 and he is still a member at the last event (minute 30).
    assert "repeat_viewer                           0       1       1  " in out
    assert "abandoned_cart                          1       1       0  bob" in out
    # two slices of the 30 minutes: ann's enter (2m) and exit (10m) both fall in the first
    assert "  repeat_viewer                  0(+1/-1)  0(+0/-0)" in out
    assert "  abandoned_cart                 0(+0/-0)  1(+1/-0)" in out


def test_explain_names_the_deciding_values_and_events(tmp_path, capsys):
    rules, events = _write(tmp_path, EVENTS)
    assert main(["explain", "--rules", rules, "--events", events, "--customer", "bob"]) == 0
    out = capsys.readouterr().out
    assert "[IN ] abandoned_cart: cart_add not followed by checkout/purchase within 15m (cart_id=k1) since 12m ago" in out
    assert "cart_add      cart_id=k1, cart_value=20  <- not followed up in time" in out
    assert "[out] repeat_viewer: count(product_view, 10m) = 0, needs > 2" in out
    assert "2026-01-01 00:18:00  enter abandoned_cart" in out


def test_explain_unknown_customer(tmp_path, capsys):
    rules, events = _write(tmp_path, EVENTS)
    assert main(["explain", "--rules", rules, "--events", events, "--customer", "nobody"]) == 0
    assert "no events for customer 'nobody'" in capsys.readouterr().out


def test_preview_refuses_invalid_rules_with_located_errors(tmp_path, capsys):
    rules, events = _write(tmp_path, EVENTS)
    (tmp_path / "rules" / "r.yaml").write_text(RULES.replace("greater_than", "greater"))
    assert main(["preview", "--rules", rules, "--events", events]) == 1
    assert "r.yaml:9:7" in capsys.readouterr().out


def test_generate_writes_valid_json_lines(tmp_path):
    out = tmp_path / "sample.jsonl"
    assert main(["generate", "--events", "300", "--customers", "20", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) >= 300
    assert {"event_id", "customer_id", "event_type", "event_time", "properties"} <= set(records[0])


def test_preview_and_explain_write_json_for_tools(tmp_path, capsys):
    rules, events = _write(tmp_path, EVENTS)
    assert main(["preview", "--rules", rules, "--events", events, "--slices", "2", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    by_id = {s["id"]: s for s in report["segments"]}
    assert (report["customers"], report["events"], report["duplicates"]) == (2, 6, 1)
    assert by_id["abandoned_cart"]["members"] == ["bob"] and by_id["repeat_viewer"]["members"] == []
    assert [(t["enters"], t["exits"], t["size"]) for t in by_id["repeat_viewer"]["timeline"]] == [(1, 1, 0), (0, 0, 0)]

    assert main(["explain", "--rules", rules, "--events", events, "--customer", "bob", "--format", "json"]) == 0
    why = json.loads(capsys.readouterr().out)
    [cart] = [s for s in why["segments"] if s["id"] == "abandoned_cart"]
    assert cart["member"] is True and cart["events"][0]["event_type"] == "cart_add"
    assert [(c["kind"], c["segment"]) for c in why["changes"]] == [("enter", "abandoned_cart")]
