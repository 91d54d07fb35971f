"""The rule loader: every broken rule file gives exactly its expected message, and every construct
of rules/README.md gives exactly the model objects it means."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flink_jobs.cli import main
from flink_jobs.core import loader
from flink_jobs.core.conditions import (
    Absence,
    AllOf,
    AnyOf,
    InSegment,
    ProfileField,
    Score,
)
from flink_jobs.core.diagnostics import Diagnostic, RuleLoadError
from flink_jobs.core.durations import DAY, HOUR, MINUTE
from flink_jobs.core.model import Comparison, Segment, SourceRef

from .helpers import CATALOG
from .helpers import condition as _condition
from .helpers import selector as _sel

REPO = Path(__file__).resolve().parents[3]
BROKEN = REPO / "tests" / "rules_broken"
# A case is a .yaml file or a folder of them, next to <case>.expected.
CASES = sorted(p.name for p in BROKEN.iterdir() if p.suffix == ".yaml" or p.is_dir())


# ---- the broken corpus ------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_broken_case_prints_exactly_its_expected_output(case, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    expected = (BROKEN / Path(case).with_suffix(".expected").name).read_text(encoding="utf-8")

    # Rule files are checked against the shipped catalogue; a broken catalogue (catalog_*) alone.
    catalog = [] if case.startswith("catalog_") else ["--catalog", "rules/catalog.yaml"]
    code = main(["validate", *catalog, f"tests/rules_broken/{case}"])

    assert capsys.readouterr().out == expected
    assert code == 1


def test_every_broken_case_has_an_expected_file_and_none_is_orphaned():
    expected = sorted(p.stem for p in BROKEN.glob("*.expected"))
    assert expected == sorted(Path(c).stem for c in CASES)
    assert len(CASES) >= 20


def test_broken_case_problems_are_the_same_through_the_library():
    with pytest.raises(RuleLoadError) as caught:
        loader.load_rules([BROKEN / "several_errors.yaml"], catalog=CATALOG)
    error = caught.value
    assert len(error.diagnostics) == 8
    assert {d.line for d in error.diagnostics} == {10, 11, 16, 17, 18, 20, 22, 24}
    assert str(error).endswith("\n\nerror: 8 problems in 1 file")


# ---- diagnostics --------------------------------------------------------------------------------


def test_diagnostic_renders_like_the_readme_example():
    source = "\n" * 11 + "        greater: 2\n"
    diagnostic = Diagnostic(
        "unknown operator 'greater'",
        "rules/engagement.yaml",
        12,
        9,
        7,
        "did you mean 'greater_than'? Operators: equals, not_equals",
    )

    assert diagnostic.render(source) == (
        "error: unknown operator 'greater'\n"
        "  --> rules/engagement.yaml:12:9\n"
        "   |\n"
        "12 |         greater: 2\n"
        "   |         ^^^^^^^\n"
        "   = help: did you mean 'greater_than'? Operators: equals, not_equals"
    )


def test_diagnostic_without_source_or_position_shows_only_the_place():
    assert Diagnostic("bad", "a.yaml", 3, 2, help="fix it").render(None) == (
        "error: bad\n --> a.yaml:3:2\n  = help: fix it"
    )
    assert Diagnostic("no rule files in this folder", "rules", 0, 0).render("") == (
        "error: no rule files in this folder\n --> rules"
    )


def test_rule_load_error_joins_all_problems_and_counts_files():
    problems = [
        Diagnostic("one", "a.yaml", 1, 1),
        Diagnostic("two", "a.yaml", 2, 1),
        Diagnostic("three", "b.yaml", 1, 1),
    ]
    error = RuleLoadError(problems, {"a.yaml": "x: 1\ny: 2\n", "b.yaml": "z: 3\n"})

    assert error.diagnostics == problems
    assert str(error) == error.rendered
    blocks = str(error).split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        "error: one",
        "error: two",
        "error: three",
        "error: 3 problems in 2 files",
    ]


# ---- every construct of rules/README.md ---------------------------------------------------------




def test_horizon_and_known_scores_can_be_configured():
    with pytest.raises(RuleLoadError, match="longer than the state horizon 7d"):
        _condition("count: page_view\nwithin: 8d\nat_least: 1", horizon=7 * DAY)
    assert _condition("score: churn_risk\nat_least: 0.5", known_scores=("churn_risk",)) == Score(
        "churn_risk", Comparison("at_least", 0.5)
    )


# ---- segments, sources, versions, files ---------------------------------------------------------

SEGMENT_TEXT = """\
version: 1
segments:
  - id: big_cart
    description: Yes, carts over 50
    owner: lifecycle-marketing
    ttl: 2h
    exclude: [bot, bot]
    when:
      count: {event: cart_add, where: {cart_value: {greater_than: 50}}}
      within: 24h
      at_least: 1
  - id: bot
    when:
      any:
        - score: anomaly_score
          at_least: 0.9
        - count: page_view
          within: 1m
          greater_than: 100
"""


def test_segment_fields_and_sources_point_at_the_yaml():
    rules = loader.load_rules_from_texts({"rules/value.yaml": SEGMENT_TEXT}, catalog=CATALOG)
    big_cart, bot = rules.segments

    assert big_cart == Segment(
        id="big_cart",
        description="Yes, carts over 50",
        owner="lifecycle-marketing",
        condition=big_cart.condition,
        ttl=2 * HOUR,
        exclude=("bot",),
    )
    assert (bot.description, bot.owner, bot.ttl, bot.exclude) == ("", "", None, ())
    assert big_cart.source == SourceRef("rules/value.yaml", 3, 5)
    assert big_cart.condition.source == SourceRef("rules/value.yaml", 9, 7)
    assert isinstance(bot.condition, AnyOf)
    assert bot.condition.source == SourceRef("rules/value.yaml", 14, 7)
    assert [c.source for c in bot.condition.children] == [
        SourceRef("rules/value.yaml", 15, 11),
        SourceRef("rules/value.yaml", 17, 11),
    ]


def test_version_depends_on_names_and_texts_not_on_their_order():
    a = "version: 1\nsegments: []\n"
    b = "version: 1\nsegments:\n  - id: x\n    when: {score: anomaly_score, at_least: 1}\n"
    one = loader.load_rules_from_texts({"a.yaml": a, "b.yaml": b}, catalog=CATALOG)
    same = loader.load_rules_from_texts({"b.yaml": b, "a.yaml": a}, catalog=CATALOG)
    edited_b = b.replace("at_least: 1", "at_least: 2")
    edited = loader.load_rules_from_texts({"a.yaml": a, "b.yaml": edited_b}, catalog=CATALOG)
    renamed = loader.load_rules_from_texts({"a.yaml": a, "c.yaml": b}, catalog=CATALOG)

    assert one.version == same.version
    assert len({one.version, edited.version, renamed.version}) == 3
    assert one.version.startswith("rs-") and len(one.version) == 15
    int(one.version[3:], 16)


def test_all_problems_of_all_files_are_reported_in_file_order():
    good = "version: 1\nsegments:\n  - id: ok\n    when: {segment: missing_one}\n"
    bad = (
        "version: 3\nsegments:\n"
        "  - id: also_ok\n    when: {count: page_veiw, within: 1h, at_least: 1}\n"
    )
    with pytest.raises(RuleLoadError) as caught:
        loader.load_rules_from_texts({"z.yaml": good, "a.yaml": bad}, catalog=CATALOG)
    assert [(d.file, d.line, d.message) for d in caught.value.diagnostics] == [
        ("a.yaml", 1, "unsupported version '3'"),
        ("a.yaml", 4, "unknown event type 'page_veiw'"),
        ("z.yaml", 4, "unknown segment 'missing_one'"),
    ]
    assert str(caught.value).endswith("error: 3 problems in 2 files")


def test_a_cycle_through_several_files_is_reported_once():
    texts = {
        "a.yaml": "version: 1\nsegments:\n  - id: a\n    when: {segment: b}\n",
        "b.yaml": "version: 1\nsegments:\n  - id: b\n    exclude: [c]\n    when: {segment: d}\n"
        "  - id: d\n    when: {score: anomaly_score, at_least: 1}\n",
        "c.yaml": "version: 1\nsegments:\n  - id: c\n    when: {segment: a}\n",
    }
    with pytest.raises(RuleLoadError) as caught:
        loader.load_rules_from_texts(texts, catalog=CATALOG)
    assert [(d.file, d.message) for d in caught.value.diagnostics] == [
        ("a.yaml", "segments depend on each other in a loop: a -> b -> c -> a"),
    ]


def test_yaml_quirks_free_text_stays_as_written_but_values_must_be_typed():
    text = (
        "version: 1\nsegments:\n  - id: no\n    description: no\n    owner: on\n"
        "    when: {profile: country, equals: 'NO'}\n"
    )
    segment = loader.load_rules_from_texts({"t.yaml": text}, catalog=CATALOG).segments[0]
    assert (segment.id, segment.description, segment.owner) == ("no", "no", "on")
    assert segment.condition == ProfileField("country", Comparison("equals", "NO"))


def test_load_rules_reads_folders_and_skips_drafts_hidden_and_other_files(tmp_path):
    body = "version: 1\nsegments:\n  - id: {id}\n    when: {{score: anomaly_score, at_least: 1}}\n"
    (tmp_path / "b.yaml").write_text(body.format(id="b"))
    (tmp_path / "a.yml").write_text(body.format(id="a"))
    (tmp_path / "_draft.yaml").write_text("not: [valid")
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "notes.txt").write_text("not: [valid")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("not: [valid")

    rules = loader.load_rules([tmp_path], catalog=CATALOG)

    assert [s.id for s in rules.segments] == ["a", "b"]
    assert rules.segments[0].source.file == str(tmp_path / "a.yml")


def test_check_rules_reports_missing_paths_and_empty_folders(tmp_path):
    rule_set, problems, sources = loader.check_rules([tmp_path / "nope.yaml", tmp_path])
    assert rule_set is None and sources == {}
    assert [(d.file, d.message) for d in problems] == [
        (str(tmp_path), "no rule files in this folder"),
        (str(tmp_path / "nope.yaml"), "no such file or folder"),
    ]


# ---- the shipped rules and the command --------------------------------------------------------

REQUIRED_SEGMENTS = {
    "repeat_product_viewer",
    "abandoned_cart",
    "high_purchase_intent",
    "high_engagement",
    "engaged_cart_abandoner",
    "high_value_customer",
    "dormant_customer",
    "suspected_bot",
    "high_purchase_propensity",
}


def test_shipped_rules_load_and_hold_the_product_segments():
    rules = loader.load_rules([REPO / "rules"])
    by_id = rules.by_id()

    assert REQUIRED_SEGMENTS <= set(by_id)
    for segment in rules.segments:
        assert segment.description and segment.owner, segment.id
        if segment.id != "suspected_bot":
            assert "suspected_bot" in segment.exclude, segment.id
    assert by_id["abandoned_cart"].condition == Absence(
        _sel("cart_add"), _sel("checkout", "purchase"), 15 * MINUTE, 24 * HOUR, "cart_id"
    )
    assert by_id["engaged_cart_abandoner"].condition == AllOf(
        (InSegment("high_engagement"), InSegment("abandoned_cart"))
    )
    assert by_id["high_purchase_propensity"].condition == Score(
        "purchase_propensity", Comparison("at_least", 0.8)
    )


def test_validate_passes_on_the_shipped_rules(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    rules = loader.load_rules(["rules"])

    assert main(["validate", "rules/"]) == 0
    files = len(list((REPO / "rules").glob("*.yaml")))
    assert capsys.readouterr().out == (
        f"ok: {len(rules.segments)} segments in {files} files (rule set {rules.version})\n"
    )


def test_validate_usage_errors_exit_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["validate"]) == 2
    assert main([]) == 2
    assert main(["validate", "--horizon", "ten days", "rules"]) == 2


# ---- robustness: rule files arrive over Kafka, so no text may crash the loader -------------------

_SHIPPED = {p.name: p.read_text(encoding="utf-8") for p in sorted((REPO / "rules").glob("*.yaml"))}
# Fragments that make typical slips: wrong shapes, empty values, YAML oddities, stray keys.
_TOKENS = (
    ["", "[]", "{}", "- ", ": ", "~", "yes", "-1", "1.5", "0s", "10m", "'", "&a", "*a"]
    + ["all:", "not:", "within:", "event:", "segment:", "where:", "in:", "'>':", "id: x"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_edited_rule_files_load_or_fail_with_positioned_problems(data):
    name = data.draw(st.sampled_from(sorted(_SHIPPED)))
    lines = _SHIPPED[name].splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        column = data.draw(st.integers(0, len(lines[i])))
        token = data.draw(st.sampled_from(_TOKENS))
        if data.draw(st.booleans()):
            lines[i] = lines[i][:column] + token + lines[i][column:]
        else:
            del lines[i]
            if not lines:
                lines = [token]
    text = "\n".join(lines) + "\n"

    try:
        loader.load_rules_from_texts({name: text}, catalog=CATALOG)
    except RuleLoadError as error:
        assert error.diagnostics
        for d in error.diagnostics:
            assert d.file == name and d.message and d.length >= 1
            assert 1 <= d.line <= len(lines) + 1 and d.column >= 1


# ---- what a rule file may cost (core/syntax/bounds.py) ------------------------------------------------


def test_a_file_over_the_size_bound_is_refused_before_it_is_read():
    from flink_jobs.core.syntax import bounds

    text = "version: 1\nsegments:\n" + "# padding\n" * (bounds.MAX_FILE_BYTES // 10 + 1)
    with pytest.raises(RuleLoadError) as caught:
        loader.load_rules_from_texts({"big.yaml": text}, catalog=CATALOG)
    [problem] = caught.value.diagnostics
    assert problem.message == f"the file is {len(text):,} bytes, more than the {bounds.MAX_FILE_BYTES:,} a rule file may have"


def test_a_set_over_the_segment_bound_is_refused_at_the_first_segment_too_many():
    from flink_jobs.core.syntax import bounds

    segment = "  - id: s{n}\n    description: x\n    owner: x\n    when: {{count: page_view, within: 1h, at_least: 1}}\n"
    half = bounds.MAX_SEGMENTS // 2 + 1
    texts = {
        "a.yaml": "version: 1\nsegments:\n" + "".join(segment.format(n=n) for n in range(half)),
        "b.yaml": "version: 1\nsegments:\n" + "".join(segment.format(n=n) for n in range(half, 2 * half)),
    }
    with pytest.raises(RuleLoadError) as caught:
        loader.load_rules_from_texts(texts, catalog=CATALOG)
    [problem] = caught.value.diagnostics
    assert problem.message == f"more than {bounds.MAX_SEGMENTS:,} segments in the rule set"
    assert problem.file == "b.yaml"


def test_a_rule_sets_version_does_not_depend_on_the_path_it_was_read_by(tmp_path):
    import os

    folder = Path(__file__).resolve().parents[3] / "rules"
    absolute = loader.load_rules([str(folder)]).version
    cwd = os.getcwd()
    try:
        os.chdir(folder.parent)
        relative = loader.load_rules(["rules"]).version
    finally:
        os.chdir(cwd)
    published = loader.load_rules_from_texts({p.name: p.read_text() for p in folder.glob("*.yaml")}).version
    assert absolute == relative == published
