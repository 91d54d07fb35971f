"""Segment rules from YAML to the model, every problem reported at its file, line and column.

``load_rules(paths)`` and ``load_rules_from_texts({name: text})`` return a ``RuleSet`` or raise
``RuleLoadError`` holding every problem of every file; ``check_rules(paths)`` returns the problems
instead (for the CLI). The rule language is described in ``rules/README.md``.

Choices a caller may notice: files are read in sorted name order (segments, messages and the rule
set version do not depend on the order paths or texts were given); a list of conditions with one
item (``all: [x]``, ``when: [x]``) is that item itself; a condition's ``source`` is where its
mapping starts, and the leaves made from several comparisons share it.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Literal, Mapping, NamedTuple, Sequence

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from . import catalog, model, windows
from .diagnostics import Diagnostic, RuleLoadError
from .durations import HOUR, MINUTE, format_duration, parse_duration

SUPPORTED_VERSION = 1
DEFAULT_KEEP = 24 * HOUR
DEFAULT_SESSION_GAP = 30 * MINUTE

_SEGMENT_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_FILE_KEYS = ("version", "segments")
_SEGMENT_KEYS = ("id", "description", "owner", "when", "ttl", "exclude")
_SELECTOR_KEYS = ("event", "where")
_RFM_PARTS = ("recency", "frequency", "monetary")
_METRICS = ("sum", "avg", "min", "max")
_MODIFIERS = ("of", "within", "where", "not_followed_by", "match_on", "keep", "gap")
# Each construct: the other keys it takes, and whether it takes comparisons.
_CONSTRUCTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "count": (("within",), True),
    "sum": (("of", "within"), True),
    "avg": (("of", "within"), True),
    "min": (("of", "within"), True),
    "max": (("of", "within"), True),
    "distinct": (("of", "within"), True),
    "event": (("where", "not_followed_by", "within", "match_on", "keep"), False),
    "sequence": (("within", "match_on", "keep"), False),
    "sessions": (("within", "gap"), True),
    "since_last": ((), True),
    "rfm": (("within",), False),
    "profile": ((), True),
    "score": ((), True),
    "segment": ((), False),
    "all": ((), False),
    "any": ((), False),
    "not": ((), False),
}

_ORDERING = ("less_than", "at_most", "greater_than", "at_least")
_NUMBER_RESULT_OPS = ("equals", "not_equals", *_ORDERING, "in", "not_in")
# Which comparisons make sense for a property (or profile field) of each type.
_OPS_BY_TYPE: Mapping[str, tuple[str, ...]] = {
    "string": ("equals", "not_equals", "in", "not_in", "exists", "contains", "starts_with"),
    "number": (*_NUMBER_RESULT_OPS, "exists"),
    "timestamp": (*_NUMBER_RESULT_OPS, "exists"),
    "bool": ("equals", "not_equals", "exists"),
}

_ValueKind = Literal["string", "number", "bool", "timestamp", "duration"]
_KIND_WORDS: Mapping[str, str] = {
    "string": "text",
    "number": "a number",
    "bool": "true or false",
    "timestamp": "a date and time",
    "duration": "a duration",
}
_LIST_LIMIT = 12  # allowed values are listed in a help line when there are at most this many
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Stateless use only (scalar conversion), so one instance can be shared.
_SCALARS = SafeConstructor()
_TAG = "tag:yaml.org,2002:"


# ---- public API -------------------------------------------------------------------------------


def load_rules(
    paths: Sequence[str | Path],
    *,
    horizon: int = windows.DEFAULT_HORIZON,
    known_scores: Sequence[str] = catalog.KNOWN_SCORES,
) -> model.RuleSet:
    """Load rule files and folders (every ``*.yaml``/``*.yml`` directly inside, except names
    starting with ``_`` or ``.``); raise ``RuleLoadError`` with every problem of every file."""
    rule_set, diagnostics, sources = check_rules(paths, horizon=horizon, known_scores=known_scores)
    if rule_set is None:
        raise RuleLoadError(diagnostics, sources)
    return rule_set


def load_rules_from_texts(
    texts: Mapping[str, str],
    *,
    horizon: int = windows.DEFAULT_HORIZON,
    known_scores: Sequence[str] = catalog.KNOWN_SCORES,
) -> model.RuleSet:
    """Load rules from ``{file name: YAML text}`` without touching the filesystem (the job gets
    rule files from Kafka); raise ``RuleLoadError`` with every problem of every file."""
    rule_set, diagnostics = _check_texts(texts, horizon, tuple(known_scores))
    if rule_set is None:
        raise RuleLoadError(diagnostics, texts)
    return rule_set


def check_rules(
    paths: Sequence[str | Path],
    *,
    horizon: int = windows.DEFAULT_HORIZON,
    known_scores: Sequence[str] = catalog.KNOWN_SCORES,
) -> tuple[model.RuleSet | None, list[Diagnostic], dict[str, str]]:
    """Like ``load_rules`` but returns ``(rule set or None, problems, {file name: text})``.

    The rule set is None exactly when there are problems. File names are the paths as given
    (folder path joined with the file name), which is how messages show them.
    """
    texts, read_problems = _read_paths(paths)
    rule_set, diagnostics = _check_texts(texts, horizon, tuple(known_scores))
    if read_problems:
        diagnostics = sorted([*read_problems, *diagnostics], key=lambda d: d.file)
        rule_set = None
    return rule_set, diagnostics, texts


def rule_set_version(texts: Mapping[str, str]) -> str:
    """``rs-`` and 12 hex digits of a SHA-256 over the sorted (file name, text) pairs."""
    digest = hashlib.sha256()
    for name, text in sorted(texts.items()):
        for part in (name, text):
            data = part.encode("utf-8")
            # Length-prefixed so that no two different sets of files hash the same bytes.
            digest.update(f"{len(data)}:".encode("ascii"))
            digest.update(data)
    return "rs-" + digest.hexdigest()[:12]


# ---- reading files ------------------------------------------------------------------------------


def _read_paths(paths: Sequence[str | Path]) -> tuple[dict[str, str], list[Diagnostic]]:
    texts: dict[str, str] = {}
    problems: list[Diagnostic] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and p.suffix in (".yaml", ".yml")
                and not p.name.startswith(("_", "."))
            )
            if not files:
                problems.append(
                    Diagnostic(
                        "no rule files in this folder",
                        str(path),
                        0,
                        0,
                        help="rule files end in .yaml or .yml; "
                        "names starting with _ or . are skipped",
                    )
                )
        elif path.exists():
            files = [path]
        else:
            problems.append(Diagnostic("no such file or folder", str(path), 0, 0))
            continue
        for file in files:
            try:
                texts[str(file)] = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                problems.append(
                    Diagnostic(
                        f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                        str(file),
                        0,
                        0,
                        help="save the file as UTF-8",
                    )
                )
            except OSError as exc:
                problems.append(
                    Diagnostic(f"cannot read the file: {exc.strerror}", str(file), 0, 0)
                )
    return texts, problems


# ---- checks across files ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Place:
    file: str
    line: int
    column: int
    length: int

    def diagnostic(self, message: str, help: str | None) -> Diagnostic:
        return Diagnostic(message, self.file, self.line, self.column, self.length, help)


@dataclass(frozen=True, slots=True)
class _Ref:
    """A reference to another segment (``segment:`` or ``exclude``), where it was written."""

    target: str
    place: _Place


@dataclass(slots=True)
class _Draft:
    """What was read of one segment; ``segment`` is None when it has problems."""

    id: str | None
    id_place: _Place | None
    refs: list[_Ref] = field(default_factory=list)
    segment: model.Segment | None = None


def _check_texts(
    texts: Mapping[str, str], horizon: int, known_scores: tuple[str, ...]
) -> tuple[model.RuleSet | None, list[Diagnostic]]:
    diagnostics: list[Diagnostic] = []
    drafts: list[_Draft] = []
    for name in sorted(texts):
        checker = _FileChecker(name, texts[name], horizon, known_scores)
        drafts.extend(checker.check())
        diagnostics.extend(checker.diagnostics)

    first_by_id: dict[str, _Draft] = {}
    for draft in drafts:
        if draft.id is None or draft.id_place is None:
            continue
        first = first_by_id.get(draft.id)
        if first is None:
            first_by_id[draft.id] = draft
            continue
        assert first.id_place is not None
        where = first.id_place
        diagnostics.append(
            draft.id_place.diagnostic(
                f"segment id '{draft.id}' is already used",
                f"it is first defined at {where.file}:{where.line}:{where.column}; "
                "segment ids must be unique across all rule files, so rename one of them",
            )
        )

    known = sorted(first_by_id)
    for draft in drafts:
        for ref in draft.refs:
            if ref.target not in first_by_id:
                diagnostics.append(
                    ref.place.diagnostic(
                        f"unknown segment '{ref.target}'",
                        _suggest(ref.target, known, None)
                        or "no rule file defines a segment with this id; check the spelling",
                    )
                )
    diagnostics.extend(_cycle_problems(first_by_id))

    # Files were read in name order; cross-file problems go to their place among the others.
    diagnostics.sort(key=lambda d: (d.file, d.line, d.column))
    if diagnostics:
        return None, diagnostics
    segments = tuple(d.segment for d in drafts if d.segment is not None)
    return model.RuleSet(segments=segments, version=rule_set_version(texts)), []


def _cycle_problems(by_id: Mapping[str, _Draft]) -> list[Diagnostic]:
    """One problem per loop of segment references, at the reference leaving its first member."""
    rank = {segment_id: i for i, segment_id in enumerate(by_id)}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    reported: set[tuple[str, ...]] = set()
    problems: list[Diagnostic] = []

    def visit(start: str) -> None:
        # Iterative depth-first search: rule sets can be long chains of references.
        path: list[str] = [start]
        todo: list[list[str]] = [[r.target for r in by_id[start].refs]]
        state[start] = 1
        while path:
            if not todo[-1]:
                state[path.pop()] = 2
                todo.pop()
                continue
            target = todo[-1].pop(0)
            if target not in by_id:
                continue
            if state.get(target) == 1:
                loop = path[path.index(target) :]
                first = min(range(len(loop)), key=lambda i: rank[loop[i]])
                loop = loop[first:] + loop[:first]
                if tuple(loop) not in reported:
                    reported.add(tuple(loop))
                    problems.append(_cycle_problem(by_id, loop))
            elif target not in state:
                state[target] = 1
                path.append(target)
                todo.append([r.target for r in by_id[target].refs])

    for segment_id in by_id:
        if segment_id not in state:
            visit(segment_id)
    return problems


def _cycle_problem(by_id: Mapping[str, _Draft], loop: list[str]) -> Diagnostic:
    head, after = loop[0], loop[1 % len(loop)]
    ref = next(r for r in by_id[head].refs if r.target == after)
    if len(loop) == 1:
        return ref.place.diagnostic(
            f"segment '{head}' depends on itself",
            f"remove the reference to '{head}' from its own rule",
        )
    return ref.place.diagnostic(
        "segments depend on each other in a loop: " + " -> ".join([*loop, head]),
        "a segment cannot depend on itself, directly or through other segments "
        "(segment: or exclude:); remove one of these references",
    )


# ---- one file -----------------------------------------------------------------------------------


class _Entry(NamedTuple):
    key: str
    key_node: ScalarNode
    value: Node


@dataclass(frozen=True, slots=True)
class _Subject:
    """What a comparison tests, for messages: e.g. "'cart_value'" holding a number."""

    name: str
    kind: _ValueKind
    ops: tuple[str, ...]
    limit: int | None = None  # the largest duration that can be measured (the state horizon)
    sample: str | None = None  # a typical value, for examples in messages


@dataclass(frozen=True, slots=True)
class _Cond:
    """One condition mapping being read: its construct entry and all its entries by key."""

    construct: _Entry
    fields: dict[str, _Entry]
    keys_ok: bool  # False: a key was wrong, so "missing ..." problems would only add noise
    source: model.SourceRef

    @property
    def name(self) -> str:
        return self.construct.key


class _FileChecker:
    """Reads one file: its segments (as drafts) and every problem found in it."""

    def __init__(self, file: str, text: str, horizon: int, known_scores: tuple[str, ...]):
        self.file = file
        self.text = text
        self.lines = text.splitlines()
        self.horizon = horizon
        self.known_scores = known_scores
        self.diagnostics: list[Diagnostic] = []
        self._refs: list[_Ref] = []

    # -- positions and problems --

    def _place(self, node: Node) -> _Place:
        mark = node.start_mark
        return _Place(self.file, mark.line + 1, mark.column + 1, self._span(node))

    def _source(self, node: Node) -> model.SourceRef:
        mark = node.start_mark
        return model.SourceRef(self.file, mark.line + 1, mark.column + 1)

    def _span(self, node: Node) -> int:
        start, end = node.start_mark, node.end_mark
        if isinstance(node, MappingNode) and not node.flow_style and node.value:
            key, value = node.value[0]
            if value.end_mark.line == key.start_mark.line and not isinstance(value, MappingNode):
                return max(1, value.end_mark.column - key.start_mark.column)
            return self._span(key)
        if start.line == end.line:
            return max(1, end.column - start.column)
        line = self.lines[start.line] if start.line < len(self.lines) else ""
        return max(1, len(line.rstrip()) - start.column)

    def _error(self, node: Node, message: str, help: str | None = None) -> None:
        self.diagnostics.append(self._place(node).diagnostic(message, help))

    def _at_value(self, entry: _Entry) -> Node:
        """The node to point at for a problem with an entry's value: the value when it is on the
        key's line and not empty, else the key."""
        value = entry.value
        if _is_null(value) or value.start_mark.line != value.end_mark.line:
            return entry.key_node
        return value

    # -- the file --

    def check(self) -> list[_Draft]:
        """Every segment of the file as a draft; problems go to ``self.diagnostics``."""
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            self._yaml_problem(exc)
            return []
        except yaml.YAMLError as exc:  # pragma: no cover - PyYAML marks its parse errors
            self.diagnostics.append(Diagnostic(f"this is not valid YAML: {exc}", self.file, 1, 1))
            return []
        if root is None:
            self.diagnostics.append(
                Diagnostic(
                    "the file is empty",
                    self.file,
                    1,
                    1,
                    help="a rule file starts with 'version: 1' "
                    "followed by a list under 'segments:'",
                )
            )
            return []
        fields = self._mapping(
            root,
            "a rule file should hold 'version: 1' and 'segments:'",
            help="start the file with 'version: 1' and list the segments under 'segments:'",
        )
        if fields is None:
            return []
        for entry in fields.values():
            if entry.key not in _FILE_KEYS:
                self._unknown_key(entry, _FILE_KEYS, "at the top of the file", "A rule file has")
        self._version(root, fields.get("version"))
        segments = fields.get("segments")
        if segments is None:
            self._error(
                root,
                "missing 'segments'",
                "list the segments under 'segments:', each starting with '- id: ...'",
            )
            return []
        if _is_null(segments.value):
            return []
        if not isinstance(segments.value, SequenceNode):
            self._error(
                self._at_value(segments),
                f"'segments' should be a list, not {_shape(segments.value)}",
                "start each segment with '- id: ...' on its own line",
            )
            return []
        drafts = [self._segment(item) for item in segments.value.value]
        return [d for d in drafts if d is not None]

    def _yaml_problem(self, exc: yaml.MarkedYAMLError) -> None:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "unreadable YAML"
        if exc.context and problem.startswith("but "):
            # "but found another document" only makes sense after its context.
            problem = f"{exc.context}, {problem}"
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        self.diagnostics.append(
            Diagnostic(
                f"this is not valid YAML: {problem}",
                self.file,
                line,
                column,
                help=_yaml_help(problem, exc.context),
            )
        )

    def _version(self, root: Node, entry: _Entry | None) -> None:
        if entry is None:
            self._error(
                root,
                "missing 'version'",
                "add 'version: 1' as the first line of the file",
            )
            return
        value = _scalar(entry.value)
        if type(value) is int and value == SUPPORTED_VERSION:
            return
        shown = "nothing" if value is None else f"'{_text(entry.value)}'"
        self._error(
            self._at_value(entry),
            f"unsupported version {shown}",
            f"this engine reads rule files of version {SUPPORTED_VERSION}; write 'version: 1'",
        )

    # -- a segment --

    def _segment(self, node: Node) -> _Draft | None:
        fields = self._mapping(
            node,
            "each segment should be 'key: value' lines",
            help="start each segment with '- id: ...' and indent its other keys under it",
        )
        if fields is None:
            return None
        for entry in fields.values():
            if entry.key not in _SEGMENT_KEYS:
                self._unknown_key(entry, _SEGMENT_KEYS, "in a segment", "Segment keys")
        ok = len(fields) == sum(k in _SEGMENT_KEYS for k in fields)

        segment_id, id_place = self._segment_id(node, fields.get("id"))
        draft = _Draft(segment_id, id_place)
        self._refs = draft.refs
        description = self._free_text(fields.get("description"))
        owner = self._free_text(fields.get("owner"))
        ttl = None
        if "ttl" in fields:
            ttl = self._duration(fields["ttl"])
            ok = ok and ttl is not None
        exclude = self._exclude(fields.get("exclude"))

        condition: model.Condition | None = None
        when = fields.get("when")
        if when is None:
            self._error(
                node,
                "this segment has no 'when'",
                "add 'when:' with the condition customers must meet, "
                "e.g. 'segment: high_engagement'",
            )
        else:
            condition = self._condition(when.value, when)

        if None in (segment_id, description, owner, exclude, condition) or not ok:
            return draft
        assert segment_id is not None and description is not None and owner is not None
        assert exclude is not None and condition is not None
        draft.segment = model.Segment(
            id=segment_id,
            description=description,
            owner=owner,
            condition=condition,
            ttl=ttl,
            exclude=exclude,
            source=self._source(node),
        )
        return draft

    def _segment_id(self, node: Node, entry: _Entry | None) -> tuple[str | None, _Place | None]:
        if entry is None:
            self._error(
                node,
                "this segment has no 'id'",
                "add a snake_case id as its first line, e.g. '- id: abandoned_cart'",
            )
            return None, None
        value = _word(entry.value)
        if not isinstance(value, str) or not value:
            self._error(
                self._at_value(entry),
                "the segment id should be a word such as abandoned_cart",
                "use lower-case letters, digits and underscores, starting with a letter",
            )
            return None, None
        if not _SEGMENT_ID.match(value):
            suggestion = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")
            if suggestion and not suggestion[0].isalpha():
                suggestion = "segment_" + suggestion
            self._error(
                entry.value,
                f"segment id '{value}' is not snake_case",
                "use lower-case letters, digits and underscores, starting with a letter"
                + (f", e.g. '{suggestion}'" if suggestion else ""),
            )
            return None, None
        return value, self._place(entry.value)

    def _free_text(self, entry: _Entry | None) -> str | None:
        """Description and owner: any single value, kept as written (YAML would turn 'yes' into
        true, which is not what a person writing a description means)."""
        if entry is None or _is_null(entry.value):
            return ""
        if not isinstance(entry.value, ScalarNode):
            self._error(
                self._at_value(entry),
                f"'{entry.key}' should be text, not {_shape(entry.value)}",
                f"write the {entry.key} on one line after '{entry.key}:'",
            )
            return None
        return entry.value.value

    def _exclude(self, entry: _Entry | None) -> tuple[str, ...] | None:
        if entry is None:
            return ()
        value = entry.value
        items: list[Node]
        if isinstance(value, SequenceNode):
            items = value.value
        elif isinstance(value, ScalarNode) and not _is_null(value):
            items = [value]
        else:
            self._error(
                self._at_value(entry),
                f"'exclude' should be a list of segment ids, not {_shape(value)}",
                "e.g. 'exclude: [suspected_bot]'",
            )
            return None
        ids: list[str] = []
        ok = True
        for item in items:
            segment_id = _word(item)
            if not isinstance(segment_id, str) or not segment_id:
                self._error(
                    item, f"'{_text(item)}' is not a segment id", "e.g. 'exclude: [suspected_bot]'"
                )
                ok = False
                continue
            self._refs.append(_Ref(segment_id, self._place(item)))
            if segment_id not in ids:
                ids.append(segment_id)
        return tuple(ids) if ok else None

    # -- conditions --

    def _condition(self, node: Node, owner: _Entry) -> model.Condition | None:
        """The condition in ``node``, the value of ``owner`` (``when``, ``not``, a list item)."""
        if _is_null(node) or (isinstance(node, MappingNode) and not node.value):
            self._error(
                owner.key_node,
                f"'{owner.key}' is empty",
                f"write a condition under '{owner.key}:', e.g. 'segment: high_engagement'",
            )
            return None
        if isinstance(node, SequenceNode):
            return self._combine(node, owner, model.AllOf, self._source(node))
        if not isinstance(node, MappingNode):
            self._error(
                node,
                f"'{owner.key}' should hold a condition, not {_shape(node)}",
                "write the condition as 'key: value' lines, e.g. 'segment: high_engagement' "
                "or 'count: product_view' with 'within:' and a comparison",
            )
            return None
        fields = self._mapping(node, "", help=None)
        if fields is None:
            return None
        constructs = [e for e in fields.values() if e.key in _CONSTRUCTS]
        if len(constructs) > 1:
            first, second = constructs[0], constructs[1]
            self._error(
                second.key_node,
                f"'{first.key}' and '{second.key}' cannot be in the same condition",
                "a condition tests one thing; put each in its own condition under "
                "'all:' (both must hold) or 'any:' (either is enough)",
            )
            return None
        if not constructs:
            unknown = [e for e in fields.values() if _op(e.key) is None and e.key not in _MODIFIERS]
            for entry in unknown:
                self._unknown_key(
                    entry,
                    tuple(_CONSTRUCTS),
                    "in a condition",
                    "A condition starts with one of",
                    limit=len(_CONSTRUCTS),
                )
            if not unknown:
                self._error(
                    node,
                    "this condition does not say what to test",
                    "start it with one of: " + ", ".join(_CONSTRUCTS),
                )
            return None
        construct = constructs[0]
        keys_ok = self._condition_keys(construct.key, fields)
        cond = _Cond(construct, fields, keys_ok, self._source(node))
        handler: Callable[[_Cond], model.Condition | None] = getattr(
            self, f"_c_{construct.key}", self._c_metric
        )
        result = handler(cond)
        return result if keys_ok else None

    def _condition_keys(self, construct: str, fields: Mapping[str, _Entry]) -> bool:
        allowed, takes_comparisons = _CONSTRUCTS[construct]
        ok = True
        for entry in fields.values():
            key = entry.key
            if key == construct or key in allowed or (takes_comparisons and _op(key)):
                continue
            ok = False
            if _op(key) is not None:
                self._error(
                    entry.key_node,
                    f"'{key}' cannot be used with '{construct}'",
                    _no_comparison_help(construct),
                )
            elif key == "where" and construct in ("count", *_METRICS, "distinct", "since_last"):
                self._error(
                    entry.key_node,
                    f"'where' cannot be used with '{construct}'",
                    "put it inside the event selector, e.g. "
                    "'{event: cart_add, where: {cart_value: {greater_than: 50}}}'",
                )
            elif key == "of" and construct == "count":
                self._error(
                    entry.key_node,
                    "'of' cannot be used with 'count'",
                    "count takes the events directly, e.g. 'count: cart_add'",
                )
            elif key in _MODIFIERS:
                self._error(
                    entry.key_node,
                    f"'{key}' cannot be used with '{construct}'",
                    _takes(construct),
                )
            else:
                choices = [*allowed, *(model.COMPARISON_OPS if takes_comparisons else ())]
                close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
                if takes_comparisons and key.lower() in _OP_SYNONYMS:
                    self._error(entry.key_node, f"unknown operator '{key}'", _operator_help(key))
                elif close and close[0] in model.COMPARISON_OPS:
                    self._error(entry.key_node, f"unknown operator '{key}'", _operator_help(key))
                elif close:
                    self._error(
                        entry.key_node,
                        f"unknown key '{key}'",
                        f"did you mean '{close[0]}'? {_takes(construct)}",
                    )
                else:
                    self._error(entry.key_node, f"unknown key '{key}'", _takes(construct))
        return ok

    def _combine(
        self,
        node: SequenceNode,
        owner: _Entry,
        kind: type[model.AllOf] | type[model.AnyOf],
        source: model.SourceRef,
    ) -> model.Condition | None:
        if not node.value:
            self._error(
                owner.key_node,
                f"'{owner.key}' has no conditions",
                f"add at least one condition under '{owner.key}:', or remove it",
            )
            return None
        children = [
            self._condition(item, _Entry(owner.key, owner.key_node, item)) for item in node.value
        ]
        if any(c is None for c in children):
            return None
        if len(children) == 1:
            return children[0]
        return kind(tuple(c for c in children if c is not None), source=source)

    def _c_all(self, c: _Cond) -> model.Condition | None:
        return self._c_list(c, model.AllOf)

    def _c_any(self, c: _Cond) -> model.Condition | None:
        return self._c_list(c, model.AnyOf)

    def _c_list(
        self, c: _Cond, kind: type[model.AllOf] | type[model.AnyOf]
    ) -> model.Condition | None:
        value = c.construct.value
        if isinstance(value, SequenceNode):
            return self._combine(value, c.construct, kind, c.source)
        if _is_null(value):
            self._error(
                c.construct.key_node,
                f"'{c.name}' has no conditions",
                f"add at least one condition under '{c.name}:', each starting with '- '",
            )
            return None
        self._error(
            self._at_value(c.construct),
            f"'{c.name}' should hold a list of conditions, not {_shape(value)}",
            f"start each condition under '{c.name}:' with '- '",
        )
        return None

    def _c_not(self, c: _Cond) -> model.Condition | None:
        child = self._condition(c.construct.value, c.construct)
        return None if child is None else model.Not(child, source=c.source)

    def _c_segment(self, c: _Cond) -> model.Condition | None:
        value = _word(c.construct.value)
        if not isinstance(value, str) or not value:
            self._error(
                self._at_value(c.construct),
                "'segment' needs the id of another segment",
                "e.g. 'segment: high_engagement'",
            )
            return None
        self._refs.append(_Ref(value, self._place(c.construct.value)))
        return model.InSegment(value, source=c.source)

    def _c_count(self, c: _Cond) -> model.Condition | None:
        selector = self._selector(c.construct)
        window = self._window(c, "how far back to count, e.g. 'within: 10m'")
        comparisons = self._comparisons(c, _Subject("the count", "number", _NUMBER_RESULT_OPS))
        if selector is None or window is None or comparisons is None:
            return None
        return self._leaves(
            c,
            comparisons,
            lambda cmp: model.Aggregate("count", selector, None, window, cmp, c.source),
        )

    def _c_metric(self, c: _Cond) -> model.Condition | None:
        """``sum``/``avg``/``min``/``max``/``distinct: <property>`` with ``of: <selector>``."""
        kind = c.name
        prop_node = c.construct.value
        prop = _word(prop_node)
        if not isinstance(prop, str) or not prop:
            prop_example, of_example = (
                ("category", "product_view") if kind == "distinct" else ("cart_value", "cart_add")
            )
            self._error(
                self._at_value(c.construct),
                f"'{kind}' needs the name of a property",
                f"e.g. '{kind}: {prop_example}' with 'of: {of_example}'",
            )
            prop = None
        of = self._required(
            c, "of", f"add the events to take {prop or 'the property'} from, e.g. 'of: cart_add'"
        )
        selector = self._selector(of) if of is not None else None
        prop_ok = False
        if selector is not None and prop is not None:
            assert isinstance(prop_node, ScalarNode)
            prop_type = self._property(prop_node, selector.event_types, kind)
            if prop_type is not None and kind != "distinct" and prop_type != "number":
                numbers = _common_properties(selector.event_types, "number")
                hint = "; to count different values use 'distinct'" if prop_type == "string" else ""
                self._error(
                    prop_node,
                    f"'{prop}' is {_KIND_WORDS[prop_type]}, not a number",
                    f"{kind} needs a number property; number properties of "
                    f"{_types_text(selector.event_types)}: {', '.join(numbers) or 'none'}{hint}",
                )
            else:
                prop_ok = prop_type is not None
        window = self._window(c, "how far back to look, e.g. 'within: 24h'")
        what = "number of different values" if kind == "distinct" else _METRIC_WORDS[kind]
        subject = _Subject(f"the {what}", "number", _NUMBER_RESULT_OPS)
        comparisons = self._comparisons(c, subject)
        if selector is None or not prop_ok or window is None or comparisons is None:
            return None
        assert prop is not None
        return self._leaves(
            c, comparisons, lambda cmp: model.Aggregate(kind, selector, prop, window, cmp, c.source)
        )

    def _c_event(self, c: _Cond) -> model.Condition | None:
        """``event`` + ``not_followed_by``: something that did not happen after something else."""
        first = self._selector(c.construct)
        follow = c.fields.get("not_followed_by")
        if follow is None:
            if c.keys_ok:
                shown = _text(c.construct.value)
                within = c.fields.get("within")
                period = "7d" if within is None or _is_null(within.value) else _text(within.value)
                self._error(
                    c.construct.key_node,
                    "'event' needs 'not_followed_by'",
                    "'event:' starts a condition on something that did not happen next; "
                    f"to test that an event happened, write 'count: {shown}' with "
                    f"'within: {period}' and 'at_least: 1'",
                )
            return None
        extra = c.fields.get("where")
        if extra is not None and first is not None:
            filters = self._where(extra, first.event_types)
            first = (
                None
                if filters is None
                else model.EventSelector(first.event_types, first.where + filters)
            )
        then = self._selector(follow)
        if first is not None and then is not None:
            shared = [t for t in then.event_types if t in first.event_types]
            if shared:
                self._error(
                    _item_named(follow.value, shared[0]) or self._at_value(follow),
                    f"{_types_text(tuple(shared))} is both the first event and a follow-up",
                    "the follow-up must be a different event type; remove "
                    f"{_types_text(tuple(shared))} from 'not_followed_by'",
                )
                then = None
        within = self._deadline(
            c, "add the deadline, counted from the first event, e.g. 'within: 15m'"
        )
        keep = self._keep(c)
        match_on = self._match_on(c, [first, then])
        if first is None or then is None or within is None or keep is None or match_on is False:
            return None
        if not self._fits_horizon(c, within, keep, "keep"):
            return None
        return model.Absence(first, then, within, keep, match_on, source=c.source)

    def _c_sequence(self, c: _Cond) -> model.Condition | None:
        value = c.construct.value
        steps: list[model.EventSelector | None] = []
        if not isinstance(value, SequenceNode) or len(value.value) < 2:
            shape = "one step" if isinstance(value, SequenceNode) else _shape(value)
            self._error(
                self._at_value(c.construct),
                f"'sequence' needs a list of at least two steps, not {shape}",
                "e.g. 'sequence: [product_view, cart_add, purchase]'",
            )
            steps = [None]
        else:
            key = c.construct.key_node
            steps = [self._selector(_Entry("sequence", key, item)) for item in value.value]
        within = self._deadline(
            c, "add the time allowed from the first step to the last, e.g. 'within: 1h'"
        )
        keep = self._keep(c)
        match_on = self._match_on(c, steps)
        if any(s is None for s in steps) or within is None or keep is None or match_on is False:
            return None
        if not self._fits_horizon(c, within, keep, "keep"):
            return None
        return model.Sequence(
            tuple(s for s in steps if s is not None), within, keep, match_on, source=c.source
        )

    def _c_sessions(self, c: _Cond) -> model.Condition | None:
        measure = _word(c.construct.value)
        if measure not in model.SESSION_MEASURES:
            shown = _text(c.construct.value) if isinstance(c.construct.value, ScalarNode) else ""
            self._error(
                self._at_value(c.construct),
                f"unknown session measure '{shown}'" if shown else "'sessions' needs a measure",
                _suggest(shown, model.SESSION_MEASURES, "Measures"),
            )
            measure = None
        window = self._window(c, "how far back to look, e.g. 'within: 7d'")
        gap = DEFAULT_SESSION_GAP
        if "gap" in c.fields:
            gap = self._duration(c.fields["gap"])
        if measure == "count" or measure is None:
            subject = _Subject("the number of sessions", "number", _NUMBER_RESULT_OPS)
        else:
            words = "average" if measure == "avg_duration" else "total"
            subject = _Subject(f"the {words} session duration", "duration", _NUMBER_RESULT_OPS)
        comparisons = self._comparisons(c, subject)
        if measure is None or window is None or gap is None or comparisons is None:
            return None
        if not self._fits_horizon(c, window, gap, "gap", default_note=False):
            return None
        assert isinstance(measure, str)
        return self._leaves(
            c, comparisons, lambda cmp: model.Sessions(measure, window, gap, cmp, c.source)
        )

    def _c_since_last(self, c: _Cond) -> model.Condition | None:
        selector = self._selector(c.construct)
        subject = _Subject("the time since the last event", "duration", _ORDERING, self.horizon)
        comparisons = self._comparisons(c, subject)
        if selector is None or comparisons is None:
            return None
        return self._leaves(c, comparisons, lambda cmp: model.SinceLast(selector, cmp, c.source))

    def _c_rfm(self, c: _Cond) -> model.Condition | None:
        fields = self._mapping(
            c.construct.value,
            "'rfm' should be 'key: value' lines",
            help="e.g. 'rfm: {recency: {at_most: 30d}, frequency: {at_least: 3}}'",
            anchor=c.construct,
        )
        if fields is None:
            return None
        if not fields:
            self._error(
                c.construct.key_node,
                "'rfm' is empty",
                "give at least one of recency, frequency, monetary",
            )
            return None
        ok = True
        for entry in fields.values():
            if entry.key not in _RFM_PARTS:
                self._unknown_key(entry, _RFM_PARTS, "in 'rfm'", "rfm takes")
                ok = False
        purchases = model.EventSelector((catalog.PURCHASE_EVENT,))
        needs_window = "frequency" in fields or "monetary" in fields
        window: int | None = None
        if needs_window:
            window = self._window(
                c, "add the window for frequency and monetary value, e.g. 'within: 365d'"
            )
            ok = ok and window is not None
        elif "within" in c.fields:
            self._error(
                c.fields["within"].key_node,
                "'within' has no effect on recency alone",
                "recency is the time since the last purchase; remove 'within', "
                "or add frequency or monetary",
            )
            ok = False
        leaves: list[model.Condition] = []
        for part in _RFM_PARTS:
            entry = fields.get(part)
            if entry is None:
                continue
            source = self._source(entry.key_node)
            if part == "recency":
                subject = _Subject(
                    "the time since the last purchase", "duration", _ORDERING, self.horizon
                )
            elif part == "frequency":
                subject = _Subject("the number of purchases", "number", _NUMBER_RESULT_OPS)
            else:
                subject = _Subject("the revenue", "number", _NUMBER_RESULT_OPS)
            comparisons = self._comparison_mapping(entry, subject)
            if comparisons is None:
                ok = False
                continue
            for cmp in comparisons:
                if part == "recency":
                    leaves.append(model.SinceLast(purchases, cmp, source))
                elif window is not None:
                    prop = None if part == "frequency" else catalog.REVENUE_PROPERTY
                    kind = "count" if part == "frequency" else "sum"
                    leaves.append(model.Aggregate(kind, purchases, prop, window, cmp, source))
        if not ok or not leaves:
            return None
        return leaves[0] if len(leaves) == 1 else model.AllOf(tuple(leaves), source=c.source)

    def _c_profile(self, c: _Cond) -> model.Condition | None:
        name = self._choice(
            c.construct,
            tuple(catalog.PROFILE_FIELDS),
            "profile field",
            "Profile fields",
            "e.g. 'profile: country'",
        )
        if name is None:
            return None
        prop_type = catalog.PROFILE_FIELDS[name]
        subject = _Subject(f"'{name}'", prop_type, _OPS_BY_TYPE[prop_type])
        comparisons = self._comparisons(c, subject)
        if comparisons is None:
            return None
        return self._leaves(c, comparisons, lambda cmp: model.ProfileField(name, cmp, c.source))

    def _c_score(self, c: _Cond) -> model.Condition | None:
        name = self._choice(
            c.construct,
            self.known_scores,
            "score",
            "Known scores",
            "e.g. 'score: purchase_propensity'",
        )
        shown = name or _text(c.construct.value)
        subject = _Subject(
            f"the score '{shown}'", "number", (*_NUMBER_RESULT_OPS, "exists"), sample="0.8"
        )
        comparisons = self._comparisons(c, subject)
        if name is None or comparisons is None:
            return None
        return self._leaves(c, comparisons, lambda cmp: model.Score(name, cmp, c.source))

    # -- pieces of conditions --

    def _leaves(
        self,
        c: _Cond,
        comparisons: list[model.Comparison],
        make: Callable[[model.Comparison], model.Condition],
    ) -> model.Condition:
        if len(comparisons) == 1:
            return make(comparisons[0])
        return model.AllOf(tuple(make(cmp) for cmp in comparisons), source=c.source)

    def _required(self, c: _Cond, key: str, help: str) -> _Entry | None:
        entry = c.fields.get(key)
        if entry is None and c.keys_ok:
            self._error(c.construct.key_node, f"'{c.name}' needs '{key}'", help)
        return entry

    def _window(self, c: _Cond, help: str) -> int | None:
        """The ``within`` of a sliding window: a whole number of its step, within the horizon."""
        entry = self._required(c, "within", f"add {help}" if not help.startswith("add ") else help)
        if entry is None:
            return None
        window = self._duration(entry)
        if window is None:
            return None
        problem = windows.window_problem(window, self.horizon)
        if problem is not None:
            shown = _text(entry.value)
            message = (
                f"'{shown}' is too long for a window"
                if window > self.horizon
                else f"'{shown}' is not a valid window length"
            )
            self._error(entry.value, message, problem)
            return None
        return window

    def _deadline(self, c: _Cond, help: str) -> int | None:
        entry = self._required(c, "within", help)
        return None if entry is None else self._duration(entry)

    def _keep(self, c: _Cond) -> int | None:
        entry = c.fields.get("keep")
        return DEFAULT_KEEP if entry is None else self._duration(entry)

    def _fits_horizon(
        self, c: _Cond, within: int, extra: int, key: str, *, default_note: bool = True
    ) -> bool:
        """State must outlive ``within`` plus ``keep`` (or ``gap``): both within the horizon."""
        if within + extra <= self.horizon:
            return True
        extra_entry = c.fields.get(key)
        within_entry = c.fields["within"]
        at = extra_entry if extra_entry is not None and within <= self.horizon else within_entry
        note = " (the default)" if extra_entry is None and default_note else ""
        self._error(
            at.value,
            f"'within' plus '{key}' is longer than the state horizon",
            f"within {_days(within)} + {key} {_days(extra)}{note} = "
            f"{_days(within + extra)}, but rules can look back at most "
            f"{_days(self.horizon)}; shorten within or {key}, "
            "or raise the horizon in the job configuration",
        )
        return False

    def _match_on(
        self, c: _Cond, selectors: Sequence[model.EventSelector | None]
    ) -> str | None | Literal[False]:
        """The ``match_on`` property (None when absent); False when it is wrong."""
        entry = c.fields.get("match_on")
        if entry is None:
            return None
        prop = _word(entry.value)
        if not isinstance(prop, str) or not prop:
            self._error(
                self._at_value(entry),
                "'match_on' needs the name of a property",
                "e.g. 'match_on: cart_id'",
            )
            return False
        if any(s is None for s in selectors):
            return False
        types = tuple(dict.fromkeys(t for s in selectors if s is not None for t in s.event_types))
        assert isinstance(entry.value, ScalarNode)
        return prop if self._property(entry.value, types, purpose="match_on") else False

    def _choice(
        self, entry: _Entry, choices: tuple[str, ...], noun: str, label: str, example: str
    ) -> str | None:
        value = _word(entry.value)
        if isinstance(value, str) and value in choices:
            return value
        if not isinstance(value, str) or not value:
            self._error(self._at_value(entry), f"'{entry.key}' needs the name of a {noun}", example)
        else:
            self._error(entry.value, f"unknown {noun} '{value}'", _suggest(value, choices, label))
        return None

    # -- selectors and properties --

    def _selector(self, entry: _Entry) -> model.EventSelector | None:
        """An event type, a list of them, or ``{event: ..., where: {...}}``."""
        node = entry.value
        if isinstance(node, MappingNode):
            fields = self._mapping(node, "", help=None)
            if fields is None:
                return None
            ok = True
            for field_entry in fields.values():
                if field_entry.key not in _SELECTOR_KEYS:
                    self._unknown_key(
                        field_entry, _SELECTOR_KEYS, "in an event selector", "A selector has"
                    )
                    ok = False
            event = fields.get("event")
            if event is None:
                if not ok:  # a misspelt 'event' was reported already
                    return None
                self._error(
                    node,
                    "this event selector has no 'event'",
                    "e.g. '{event: cart_add, where: {cart_value: {greater_than: 50}}}'",
                )
                return None
            if isinstance(event.value, MappingNode):
                self._error(
                    self._at_value(event),
                    "'event' in a selector should be an event type or a list of them",
                    "e.g. '{event: cart_add, where: {...}}'",
                )
                return None
            types = self._event_types(event)
            if types is None:
                return None
            where = fields.get("where")
            filters = () if where is None else self._where(where, types)
            if filters is None or not ok:
                return None
            return model.EventSelector(types, filters)
        types = self._event_types(entry)
        return None if types is None else model.EventSelector(types)

    def _event_types(self, entry: _Entry) -> tuple[str, ...] | None:
        node = entry.value
        if _is_null(node):
            self._error(
                entry.key_node,
                f"'{entry.key}' needs an event type",
                f"e.g. '{entry.key}: product_view'; event types: {', '.join(catalog.EVENT_TYPES)}",
            )
            return None
        items = node.value if isinstance(node, SequenceNode) else [node]
        if not items:
            self._error(
                self._at_value(entry),
                "the list of event types is empty",
                f"name at least one event type: {', '.join(catalog.EVENT_TYPES)}",
            )
            return None
        types: list[str] = []
        ok = True
        for item in items:
            name = _word(item)
            if name is None:
                self._error(
                    item,
                    f"expected an event type, found {_shape(item)}",
                    f"event types: {', '.join(catalog.EVENT_TYPES)}",
                )
                ok = False
            elif name not in catalog.EVENT_TYPES:
                self._error(
                    item,
                    f"unknown event type '{name}'",
                    _suggest(name, tuple(catalog.EVENT_TYPES), "Event types"),
                )
                ok = False
            elif name not in types:
                types.append(name)
        return tuple(types) if ok else None

    def _where(
        self, entry: _Entry, types: tuple[str, ...]
    ) -> tuple[model.PropertyFilter, ...] | None:
        fields = self._mapping(
            entry.value,
            "'where' should be 'property: value' pairs",
            help="e.g. 'where: {category: shoes, price: {greater_than: 50}}'",
            anchor=entry,
        )
        if fields is None:
            return None
        if not fields:
            self._error(entry.key_node, "'where' is empty", "add a property test or remove 'where'")
            return None
        filters: list[model.PropertyFilter] = []
        ok = True
        for prop_entry in fields.values():
            prop_type = self._property(prop_entry.key_node, types, "where")
            if prop_type is None:
                ok = False
                continue
            subject = _Subject(f"'{prop_entry.key}'", prop_type, _OPS_BY_TYPE[prop_type])
            value = prop_entry.value
            comparisons: list[model.Comparison] | None
            if isinstance(value, MappingNode):
                comparisons = self._comparison_mapping(prop_entry, subject)
            elif isinstance(value, SequenceNode):
                self._error(
                    self._at_value(prop_entry),
                    f"'{prop_entry.key}' should be compared with one value, not a list",
                    f"to match any of several values, write '{prop_entry.key}: {{in: [...]}}'",
                )
                comparisons = None
            elif _is_null(value):
                self._error(
                    prop_entry.key_node,
                    f"'{prop_entry.key}' has no value to compare with",
                    f"write a value, or '{prop_entry.key}: {{exists: false}}' "
                    "for events without it",
                )
                comparisons = None
            else:
                single = self._comparison("equals", prop_entry, subject)
                comparisons = None if single is None else [single]
            if comparisons is None:
                ok = False
                continue
            filters.extend(model.PropertyFilter(prop_entry.key, cmp) for cmp in comparisons)
        return tuple(filters) if ok else None

    def _property(
        self, node: ScalarNode, types: tuple[str, ...], purpose: str
    ) -> catalog.PropertyType | None:
        """The property's type when every event type has it, else report why not."""
        prop = node.value
        prop_type = catalog.property_type(types, prop)
        if prop_type is not None:
            return prop_type
        common = _common_properties(types)
        having = [t for t in types if prop in catalog.EVENT_TYPES[t]]
        if not having:
            label = f"Properties of {_types_text(types)}"
            if len(types) > 1:
                label = f"Properties that {_types_text(types)} all have"
            self._error(
                node,
                f"unknown property '{prop}' for {_types_text(types)}",
                _suggest(prop, common, label),
            )
        elif len(having) < len(types):
            missing = tuple(t for t in types if t not in having)
            verb = "has" if len(missing) == 1 else "have"
            self._error(
                node,
                f"{_types_text(missing)} {verb} no property '{prop}'",
                f"'{purpose}' needs a property that every event type here has: {', '.join(common)}",
            )
        else:  # pragma: no cover - the catalogue gives each property one type everywhere
            self._error(node, f"'{prop}' has different types on {_types_text(types)}")
        return None

    # -- comparisons --

    def _comparisons(self, c: _Cond, subject: _Subject) -> list[model.Comparison] | None:
        """The comparison entries of a condition mapping (at least one)."""
        entries = [e for e in c.fields.values() if _op(e.key) is not None]
        comparisons = self._comparison_entries(entries, subject)
        if comparisons == [] and c.keys_ok:
            self._error(
                c.construct.key_node,
                f"'{c.name}' needs a comparison",
                f"add what {subject.name} must be, e.g. "
                f"'{_example_comparison(subject)}'; operators: {', '.join(subject.ops)}",
            )
            return None
        return comparisons

    def _comparison_mapping(
        self, entry: _Entry, subject: _Subject
    ) -> list[model.Comparison] | None:
        """A mapping made only of comparisons, e.g. ``{at_least: 3}``."""
        fields = self._mapping(
            entry.value,
            f"'{entry.key}' should hold comparisons",
            help=f"e.g. '{entry.key}: {{{_example_comparison(subject)}}}'",
            anchor=entry,
        )
        if fields is None:
            return None
        ok = True
        for item in fields.values():
            if _op(item.key) is None:
                self._error(
                    item.key_node, f"unknown operator '{item.key}'", _operator_help(item.key)
                )
                ok = False
        comparisons = self._comparison_entries(
            [e for e in fields.values() if _op(e.key) is not None], subject
        )
        if comparisons == [] and ok:
            self._error(
                entry.key_node,
                f"'{entry.key}' has no comparison",
                f"add what {subject.name} must be, "
                f"e.g. '{entry.key}: {{{_example_comparison(subject)}}}'",
            )
            return None
        return comparisons if ok else None

    def _comparison_entries(
        self, entries: list[_Entry], subject: _Subject
    ) -> list[model.Comparison] | None:
        comparisons: list[model.Comparison] = []
        seen: dict[str, _Entry] = {}
        ok = True
        for entry in entries:
            op = _op(entry.key)
            assert op is not None
            if op in seen:
                earlier = seen[op]
                line = earlier.key_node.start_mark.line + 1
                self._error(
                    entry.key_node,
                    f"'{entry.key}' repeats '{earlier.key}' (line {line})",
                    "keep one of them",
                )
                ok = False
                continue
            seen[op] = entry
            if op not in subject.ops:
                self._error(
                    entry.key_node,
                    f"'{entry.key}' cannot be used with {subject.name}",
                    f"{subject.name} is {_KIND_WORDS[subject.kind]}; "
                    f"use one of: {', '.join(subject.ops)}",
                )
                ok = False
                continue
            comparison = self._comparison(op, entry, subject)
            if comparison is None:
                ok = False
            else:
                comparisons.append(comparison)
        return comparisons if ok else None

    def _comparison(self, op: str, entry: _Entry, subject: _Subject) -> model.Comparison | None:
        node = entry.value
        if _is_null(node):
            self._error(
                entry.key_node,
                f"'{entry.key}' has no value",
                f"write what to compare with after '{entry.key}:', "
                f"e.g. '{_example_comparison(subject, op)}'",
            )
            return None
        if op == "exists":
            value = _scalar(node)
            if not isinstance(value, bool):
                self._error(
                    self._at_value(entry),
                    "'exists' takes true or false",
                    "'exists: true' tests that the value is there, "
                    "'exists: false' that it is missing",
                )
                return None
            return model.Comparison(op, value)
        if op in ("in", "not_in"):
            if not isinstance(node, SequenceNode):
                shown = _text(node) if isinstance(node, ScalarNode) else "..."
                self._error(
                    self._at_value(entry),
                    f"'{entry.key}' needs a list of values",
                    f"write the values in brackets, e.g. '{entry.key}: [{shown}]'",
                )
                return None
            if not node.value:
                self._error(
                    self._at_value(entry),
                    f"'{entry.key}' needs at least one value",
                    f"write the values in brackets, e.g. '{_example_comparison(subject, op)}'",
                )
                return None
            values = [self._typed(item, subject) for item in node.value]
            if any(v is None for v in values):
                return None
            return model.Comparison(op, tuple(v for v in values if v is not None))
        if not isinstance(node, ScalarNode):
            self._error(
                self._at_value(entry),
                f"'{entry.key}' takes a single value, not {_shape(node)}",
                "to match any of several values use 'in: [...]'"
                if isinstance(node, SequenceNode) and op == "equals"
                else f"e.g. '{_example_comparison(subject, op)}'",
            )
            return None
        value = self._typed(node, subject)
        return None if value is None else model.Comparison(op, value)

    def _typed(self, node: Node, subject: _Subject) -> model.Scalar | None:
        """A comparison value of the subject's kind, or report how to write one."""
        if not isinstance(node, ScalarNode) or _is_null(node):
            self._error(node, f"expected a value, found {_shape(node)}", None)
            return None
        raw = _scalar(node)
        text = node.value
        kind = subject.kind
        if kind == "duration":
            duration = self._duration_value(node, subject.name)
            if duration is not None and subject.limit is not None and duration > subject.limit:
                # Older events are forgotten, so a longer time since one can never be measured.
                horizon = _days(subject.limit)
                self._error(
                    node,
                    f"'{text}' is longer than the state horizon",
                    f"events older than {horizon} are forgotten, so {subject.name} can never "
                    f"be known beyond that; use at most {horizon}",
                )
                return None
            return duration
        if kind == "number":
            if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw == raw:
                return raw
            if isinstance(raw, str) and _is_number_text(text):
                self._error(
                    node,
                    f'{subject.name} is a number, but "{text}" is text',
                    f"write the number without quotes: {text}",
                )
            elif isinstance(raw, str) and _is_duration_text(text):
                self._error(
                    node,
                    f"{subject.name} is a plain number, not a duration",
                    "write a number without a unit, e.g. 5",
                )
            else:
                self._error(
                    node,
                    f"{subject.name} is a number, but '{text}' is not",
                    "write a number, e.g. 3 or 49.90",
                )
            return None
        if kind == "string":
            if isinstance(raw, str):
                return raw
            if isinstance(raw, bool):
                message = f"{subject.name} is text, but YAML reads {text} as {str(raw).lower()}"
            else:
                message = f"{subject.name} is text, but {text} is a number"
            self._error(node, message, f"put the value in quotes: '{text}'")
            return None
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            self._error(
                node, f"{subject.name} is true or false, not '{text}'", "write true or false"
            )
            return None
        # Timestamps are written as ISO-8601 text and held as epoch milliseconds.
        millis = _epoch_ms(raw) if isinstance(raw, str) else None
        if millis is None:
            self._error(
                node,
                f"{subject.name} is a date and time, but '{text}' is not",
                "write it as ISO-8601, e.g. 2024-01-31 or 2024-01-31T18:00:00Z "
                "(UTC when no time zone is given)",
            )
        return millis

    def _duration(self, entry: _Entry) -> int | None:
        if _is_null(entry.value):
            self._error(
                entry.key_node,
                f"'{entry.key}' has no value",
                f"write a duration after '{entry.key}:', e.g. '{entry.key}: 10m'",
            )
            return None
        return self._duration_value(entry.value)

    def _duration_value(self, node: Node, subject: str | None = None) -> int | None:
        if not isinstance(node, ScalarNode):
            self._error(node, f"expected a duration, found {_shape(node)}", "e.g. 10m, 24h or 7d")
            return None
        raw = _scalar(node)
        if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
            # The usual slip: a plain number. Say which units would do.
            lead = f"{subject} is compared with a duration: write" if subject else "write"
            self._error(
                node,
                f"'{raw}' has no unit",
                f"{lead} a number followed by a unit (ms, s, m, h, d, w), e.g. {raw}m or {raw}d",
            )
            return None
        try:
            return parse_duration(node.value)
        except ValueError as exc:
            message, _, help = str(exc).partition("; ")
            self._error(node, message, help or None)
            return None

    # -- mappings and keys --

    def _mapping(
        self,
        node: Node,
        wrong_shape: str,
        *,
        help: str | None,
        anchor: _Entry | None = None,
    ) -> dict[str, _Entry] | None:
        """The entries of a mapping by key (first one wins on duplicates, which are reported)."""
        if not isinstance(node, MappingNode):
            if anchor is not None and _is_null(node):
                self._error(anchor.key_node, f"'{anchor.key}' is empty", help)
            else:
                where = node if anchor is None else self._at_value(anchor)
                self._error(where, f"{wrong_shape}, not {_shape(node)}", help)
            return None
        fields: dict[str, _Entry] = {}
        ok = True
        for key_node, value in node.value:
            if not isinstance(key_node, ScalarNode):
                self._error(
                    key_node, "a key should be a plain word", "remove the brackets around the key"
                )
                ok = False
                continue
            key = key_node.value
            first = fields.get(key)
            if first is not None:
                self._error(
                    key_node,
                    f"'{key}' appears twice",
                    f"it is first given on line {first.key_node.start_mark.line + 1}; "
                    "remove one of them",
                )
                ok = False
                continue
            fields[key] = _Entry(key, key_node, value)
        # Keys that are not plain words were reported; what is left can still be checked.
        return fields if fields or ok else None

    def _unknown_key(
        self,
        entry: _Entry,
        allowed: Sequence[str],
        where: str,
        label: str,
        limit: int = _LIST_LIMIT,
    ) -> None:
        self._error(
            entry.key_node,
            f"unknown key '{entry.key}' {where}",
            _suggest(entry.key, tuple(allowed), label, limit),
        )


# ---- small helpers ------------------------------------------------------------------------------

_METRIC_WORDS: Mapping[str, str] = {
    "sum": "sum",
    "avg": "average",
    "min": "minimum",
    "max": "maximum",
}


def _scalar(node: Node) -> model.Scalar | None:
    """A scalar node's value as YAML means it; None for nulls and for lists or mappings.

    Dates stay text: YAML's own date type would lose the text a person wrote.
    """
    if not isinstance(node, ScalarNode):
        return None
    tag = node.tag
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "bool":
        return bool(_SCALARS.construct_yaml_bool(node))
    if tag == _TAG + "int":
        return int(_SCALARS.construct_yaml_int(node))
    if tag == _TAG + "float":
        return float(_SCALARS.construct_yaml_float(node))
    return str(node.value)


def _word(node: Node) -> str | None:
    """A name (segment id, event type, property...) as written: YAML would read ``no`` or
    ``on`` as booleans, but as names they are words. None for empty values, lists, mappings."""
    if not isinstance(node, ScalarNode) or _is_null(node):
        return None
    return str(node.value)


def _item_named(node: Node, name: str) -> Node | None:
    """Where ``name`` is written in a selector (a type, a list of types or ``{event: ...}``)."""
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.value == "event":
                return _item_named(value, name)
        return None
    items = node.value if isinstance(node, SequenceNode) else [node]
    return next((i for i in items if isinstance(i, ScalarNode) and i.value == name), None)


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


def _text(node: Node) -> str:
    return node.value if isinstance(node, ScalarNode) else "..."


def _shape(node: Node) -> str:
    """How a node looks, in words: for "should be ..., not <shape>"."""
    if isinstance(node, MappingNode):
        return "'key: value' lines"
    if isinstance(node, SequenceNode):
        return "a list"
    if _is_null(node):
        return "nothing"
    value = _scalar(node)
    if isinstance(value, bool):
        return f"{node.value} (true or false)"
    if isinstance(value, (int, float)):
        return f"the number {node.value}"
    return f"the text '{node.value}'"


def _op(key: str) -> str | None:
    """The comparison operator a key names (symbols normalised to words), or None."""
    if key in model.COMPARISON_OPS:
        return key
    return model.OP_ALIASES.get(key)


def _operator_help(key: str) -> str:
    listed = f"Operators: {', '.join(model.COMPARISON_OPS)}"
    meant = _OP_SYNONYMS.get(key.lower())
    if meant is not None:
        return f"did you mean '{meant}'? {listed}"
    return _suggest(key, model.COMPARISON_OPS, "Operators") or listed


# Words people reach for instead of the operator names; spelling similarity alone would suggest
# 'less_than' for 'more_than'.
_OP_SYNONYMS: Mapping[str, str] = {
    "more_than": "greater_than",
    "above": "greater_than",
    "over": "greater_than",
    "gt": "greater_than",
    "fewer_than": "less_than",
    "lower_than": "less_than",
    "below": "less_than",
    "under": "less_than",
    "lt": "less_than",
    "gte": "at_least",
    "min": "at_least",
    "minimum": "at_least",
    "lte": "at_most",
    "max": "at_most",
    "maximum": "at_most",
    "eq": "equals",
    "is": "equals",
    "equal": "equals",
    "equal_to": "equals",
    "ne": "not_equals",
    "is_not": "not_equals",
    "one_of": "in",
    "not_one_of": "not_in",
    "includes": "contains",
    "begins_with": "starts_with",
}


def _suggest(
    word: str, choices: Sequence[str], label: str | None, limit: int = _LIST_LIMIT
) -> str | None:
    """``did you mean 'x'?`` and, when the list is short, ``<label>: a, b, c``."""
    parts: list[str] = []
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        parts.append(f"did you mean '{close[0]}'?")
    if label and choices and len(choices) <= limit:
        parts.append(f"{label}: {', '.join(choices)}")
    return " ".join(parts) or None


def _takes(construct: str) -> str:
    allowed, takes_comparisons = _CONSTRUCTS[construct]
    keys = ", ".join(f"'{k}'" for k in allowed)
    if allowed and takes_comparisons:
        return f"'{construct}' goes with {keys} and comparisons such as 'greater_than'"
    if takes_comparisons:
        return f"'{construct}' goes with comparisons only, such as 'greater_than'"
    if allowed:
        return f"'{construct}' goes with {keys}"
    return (
        f"'{construct}' stands alone in its condition; "
        "put other conditions beside it under 'all:' or 'any:'"
    )


def _no_comparison_help(construct: str) -> str:
    if construct == "segment":
        return (
            "'segment: x' holds while the customer is in segment x; "
            "to test the opposite, use 'not:'"
        )
    if construct == "rfm":
        return (
            "put comparisons inside recency, frequency or monetary, "
            "e.g. 'frequency: {at_least: 3}'"
        )
    if construct in ("event", "sequence"):
        return f"'{construct}' holds or not, it has nothing to compare; {_takes(construct)}"
    return f"put the comparison inside one of the conditions under '{construct}:'"


def _example_comparison(subject: _Subject, op: str | None = None) -> str:
    op = op or ("at_least" if "at_least" in subject.ops else subject.ops[0])
    samples: Mapping[str, str] = {
        "number": "3",
        "duration": "30d",
        "string": "DE",
        "bool": "true",
        "timestamp": "2024-01-31",
    }
    sample = subject.sample or samples[subject.kind]
    if op in ("in", "not_in"):
        return f"{op}: [{sample}]"
    if op == "exists":
        return "exists: true"
    return f"{op}: {sample}"


def _types_text(types: Sequence[str]) -> str:
    if len(types) == 1:
        return types[0]
    return ", ".join(types[:-1]) + " and " + types[-1]


def _common_properties(types: Sequence[str], of_type: str | None = None) -> list[str]:
    """Properties every one of the event types has (with one type), in catalogue order."""
    if not types:
        return []
    return [
        prop
        for prop, prop_type in catalog.EVENT_TYPES[types[0]].items()
        if catalog.property_type(tuple(types), prop) is not None
        and (of_type is None or prop_type == of_type)
    ]


def _days(ms: int) -> str:
    return format_duration(ms, weeks=False)


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_duration_text(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


def _epoch_ms(text: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


# PyYAML's problem texts, and what to do about them in plain words.
_YAML_HELP: tuple[tuple[str, str], ...] = (
    (
        "mapping values are not allowed",
        "put text containing ': ' in quotes, or check this line's indentation",
    ),
    ("cannot start any token", "YAML does not allow tabs for indentation; use spaces"),
    (
        "expected <block end>",
        "check the indentation: keys of one block must start in the same column",
    ),
    (
        "could not find expected ':'",
        "each line of a block needs 'key: value'; check for a missing colon or quote",
    ),
    ("found undefined alias", "define the anchor (&name) before using it (*name)"),
    ("expected a single document", "a rule file holds one document; remove the '---' lines"),
    ("found unexpected end of stream", "a quote or bracket is not closed"),
    ("<stream end>", "a quote or bracket is not closed"),
    (
        "did not find expected",
        "check the quotes, brackets and indentation on this line and the one before",
    ),
)


def _yaml_help(problem: str, context: str | None) -> str:
    for needle, help in _YAML_HELP:
        if needle in problem or (context and needle in context):
            return help
    return "check the quotes, brackets and indentation near here"
