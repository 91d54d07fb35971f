"""Which rules are in use, when rule files arrive while the job runs.

Rule files come from the compacted rules topic as (file name, YAML text; None = the file was
deleted) and are kept in Flink's broadcast state (file name -> text). Once the topic holds any
file, exactly its files are the rules; a set of files that does not load is rejected and the last
good set stays in use; when the topic holds no file (any more), the rules the job started with
are back. Under ``ACTIVE_RULES`` the store keeps the files of the set in use, so a job restored
from a checkpoint starts with them.
"""

from __future__ import annotations

import json
from typing import Iterable, Protocol

from ..core.diagnostics import Diagnostic, RuleLoadError
from ..core.loader import load_rules_from_texts
from ..core.model import RuleSet

ACTIVE_RULES = "\u0000active"
# Records of the rules topic under this prefix publish models (ml/published.py), not rule files.
MODEL_PREFIX = "models/"


# The record that publishes a whole rule set as one unit (``segments publish``): its value is
# {"files": {name: text}, "request": id, "published_by": who, "published_at": epoch ms}.
RULE_SET_KEY = "rules/set"


def is_model_key(name: str) -> bool:
    return name.startswith(MODEL_PREFIX)


def take_rule_set(files: RuleFileStore, value: str | None, start: RuleSet, horizon: int) -> RuleSet | RuleLoadError:
    """A whole rule set published as one record: if it loads, its files replace every rule file
    kept so far and it is the rules from now on; if not, nothing changes (no file of it is kept,
    so no later record can complete a partial set). A tombstone: back to the rules the job
    started with."""
    if value is None:
        texts: dict[str, str] = {}
    else:
        try:
            published = json.loads(value)
            texts = {str(k): str(v) for k, v in published["files"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return RuleLoadError([Diagnostic(f"the published rule set is not readable: {exc}", RULE_SET_KEY, 0, 0)], {})
    rules: RuleSet = start
    if texts:
        try:
            rules = load_rules_from_texts(texts, horizon=horizon)
        except RuleLoadError as exc:
            return exc
        except (RecursionError, MemoryError) as exc:
            return RuleLoadError([Diagnostic(f"the rule files could not be read: {type(exc).__name__}", RULE_SET_KEY, 0, 0)], texts)
    for key in [k for k, _ in files.items() if not is_model_key(k)]:
        files.remove(key)
    for name, text in texts.items():
        files.put(name, text)
    if texts:
        files.put(ACTIVE_RULES, json.dumps(texts))
    return rules


class RuleFileStore(Protocol):
    """Rule files by name (Flink's broadcast ``MapState``; a dict-like in tests)."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...

    def remove(self, key: str) -> None: ...

    def contains(self, key: str) -> bool: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


def is_rule_file(name: str | None) -> bool:
    """Whether a record of the rules topic names a rule file (not empty, not the store's own key)."""
    return bool(name) and name != ACTIVE_RULES and not is_model_key(name or "")


def active_rules(files: RuleFileStore, horizon: int) -> RuleSet | None:
    """The rule set in use when the store was checkpointed (None: the rules the job started with)."""
    active = files.get(ACTIVE_RULES)
    return None if active is None else load_rules_from_texts(json.loads(active), horizon=horizon)


def take_rule_file(
    files: RuleFileStore, name: str, text: str | None, start: RuleSet, horizon: int
) -> RuleSet | RuleLoadError:
    """Keep a rule file (``text`` None: delete it) and return the rules to use from now on: the set
    the stored files make (read with the job's ``horizon``), ``start`` when none is left, or the
    ``RuleLoadError`` of a set that does not load (the rules in use stay)."""
    if text is None:
        if files.contains(name):
            files.remove(name)
    else:
        files.put(name, text)
    texts = {k: v for k, v in files.items() if k != ACTIVE_RULES and not is_model_key(k)}
    if not texts:
        if files.contains(ACTIVE_RULES):
            files.remove(ACTIVE_RULES)
        return start
    try:
        rules = load_rules_from_texts(texts, horizon=horizon)
    except RuleLoadError as exc:
        return exc
    except (RecursionError, MemoryError) as exc:  # past core/syntax/bounds.py: still never the job's end
        return RuleLoadError([Diagnostic(f"the rule files could not be read: {type(exc).__name__}", name, 0, 0)], texts)
    files.put(ACTIVE_RULES, json.dumps(texts))
    return rules
