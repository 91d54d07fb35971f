"""One rule file read: its version, its segments, and each segment's condition by the construct
that starts it (``core/conditions``). Every problem is kept, located (``syntax.reader``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .. import model
from ..conditions import KEYWORDS, MODIFIERS, Keyword, all_of
from ..diagnostics import Diagnostic
from ..model import COMPARISON_OPS
from ..syntax import bounds
from ..syntax.help import OP_SYNONYMS, closest, op, operator_help, yaml_help
from ..syntax.nodes import Entry, Place, is_null, shape, text, word
from ..syntax.reader import Cond, Ref, RuleReader

SUPPORTED_VERSION = 1

_SEGMENT_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_FILE_KEYS = ("version", "segments")
_SEGMENT_KEYS = ("id", "description", "owner", "when", "ttl", "hold", "exclude")


@dataclass(slots=True)
class Draft:
    """What was read of one segment; ``segment`` is None when it has problems."""

    id: str | None
    id_place: Place | None
    refs: list[Ref] = field(default_factory=list)
    segment: model.Segment | None = None


class FileChecker(RuleReader):
    """Reads one file: its segments (as drafts) and every problem found in it."""

    # -- the file --

    def check(self) -> list[Draft]:
        """Every segment of the file as a draft; problems go to ``self.diagnostics``."""
        try:
            root = bounds.compose(self.text)
        except bounds.BoundExceeded as exc:
            self.diagnostics.append(Diagnostic(exc.message, self.file, exc.line, exc.column, help=exc.help))
            return []
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
        fields = self.mapping(
            root,
            "a rule file should hold 'version: 1' and 'segments:'",
            help="start the file with 'version: 1' and list the segments under 'segments:'",
        )
        if fields is None:
            return []
        self.unknown_keys(fields, _FILE_KEYS, "at the top of the file", "A rule file has")
        self.check_version(root, fields.get("version"), "rule files", SUPPORTED_VERSION)
        segments = fields.get("segments")
        if segments is None:
            self.error(
                root,
                "missing 'segments'",
                "list the segments under 'segments:', each starting with '- id: ...'",
            )
            return []
        if is_null(segments.value):
            return []
        if not isinstance(segments.value, SequenceNode):
            self.error(
                self.at_value(segments),
                f"'segments' should be a list, not {shape(segments.value)}",
                "start each segment with '- id: ...' on its own line",
            )
            return []
        items = segments.value.value
        if len(items) > bounds.MAX_SEGMENTS:  # before reading any: the set would be refused anyway
            self.error(
                items[bounds.MAX_SEGMENTS],
                f"more than {bounds.MAX_SEGMENTS:,} segments in the rule set",
                "a set this large is not reviewable; remove unused segments, or run another job for another team's rules",
            )
            return []
        drafts = [self._segment(item) for item in items]
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
                help=yaml_help(problem, exc.context),
            )
        )

    # -- a segment --

    def _segment(self, node: Node) -> Draft | None:
        fields = self.mapping(
            node,
            "each segment should be 'key: value' lines",
            help="start each segment with '- id: ...' and indent its other keys under it",
        )
        if fields is None:
            return None
        self.unknown_keys(fields, _SEGMENT_KEYS, "in a segment", "Segment keys")
        ok = len(fields) == sum(k in _SEGMENT_KEYS for k in fields)

        segment_id, id_place = self._segment_id(node, fields.get("id"))
        draft = Draft(segment_id, id_place)
        self.refs = draft.refs
        description = self._free_text(fields.get("description"))
        owner = self._free_text(fields.get("owner"))
        ttl = None
        if "ttl" in fields:
            ttl = self.duration(fields["ttl"])
            ok = ok and ttl is not None
        hold = None
        if "hold" in fields:
            hold = self.duration(fields["hold"])
            ok = ok and hold is not None
            if "ttl" in fields:
                self.error(
                    fields["hold"].key_node,
                    "a segment takes 'ttl' or 'hold', not both: 'ttl' ends a membership while the condition "
                    "still holds, 'hold' keeps it after the condition stopped holding",
                    "keep the one you mean; for 'in for at most X, and out for at least Y' use two segments",
                )
                ok = False
        exclude = self._exclude(fields.get("exclude"))

        condition: model.Condition | None = None
        when = fields.get("when")
        if when is None:
            self.error(
                node,
                "this segment has no 'when'",
                "add 'when:' with the condition customers must meet, "
                "e.g. 'segment: high_engagement'",
            )
        else:
            condition = self.condition(when.value, when)

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
            source=self.source(node),
            hold=hold,
        )
        return draft

    def _segment_id(self, node: Node, entry: Entry | None) -> tuple[str | None, Place | None]:
        if entry is None:
            self.error(
                node,
                "this segment has no 'id'",
                "add a snake_case id as its first line, e.g. '- id: abandoned_cart'",
            )
            return None, None
        value = word(entry.value)
        if not isinstance(value, str) or not value:
            self.error(
                self.at_value(entry),
                "the segment id should be a word such as abandoned_cart",
                "use lower-case letters, digits and underscores, starting with a letter",
            )
            return None, None
        if not _SEGMENT_ID.match(value):
            suggestion = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")
            if suggestion and not suggestion[0].isalpha():
                suggestion = "segment_" + suggestion
            self.error(
                entry.value,
                f"segment id '{value}' is not snake_case",
                "use lower-case letters, digits and underscores, starting with a letter"
                + (f", e.g. '{suggestion}'" if suggestion else ""),
            )
            return None, None
        return value, self.place(entry.value)

    def _free_text(self, entry: Entry | None) -> str | None:
        """Description and owner: any single value, kept as written (YAML would turn 'yes' into
        true, which is not what a person writing a description means)."""
        if entry is None or is_null(entry.value):
            return ""
        if not isinstance(entry.value, ScalarNode):
            self.error(
                self.at_value(entry),
                f"'{entry.key}' should be text, not {shape(entry.value)}",
                f"write the {entry.key} on one line after '{entry.key}:'",
            )
            return None
        return str(entry.value.value)

    def _exclude(self, entry: Entry | None) -> tuple[str, ...] | None:
        if entry is None:
            return ()
        value = entry.value
        items: list[Node]
        if isinstance(value, SequenceNode):
            items = value.value
        elif isinstance(value, ScalarNode) and not is_null(value):
            items = [value]
        else:
            self.error(
                self.at_value(entry),
                f"'exclude' should be a list of segment ids, not {shape(value)}",
                "e.g. 'exclude: [suspected_bot]'",
            )
            return None
        ids: list[str] = []
        ok = True
        for item in items:
            segment_id = word(item)
            if not isinstance(segment_id, str) or not segment_id:
                self.error(
                    item, f"'{text(item)}' is not a segment id", "e.g. 'exclude: [suspected_bot]'"
                )
                ok = False
                continue
            self.add_ref(segment_id, item)
            if segment_id not in ids:
                ids.append(segment_id)
        return tuple(ids) if ok else None

    # -- conditions --

    def condition(self, node: Node, owner: Entry) -> model.Condition | None:
        """The condition in ``node``, the value of ``owner`` (``when``, ``not``, a list item)."""
        if is_null(node) or (isinstance(node, MappingNode) and not node.value):
            self.error(
                owner.key_node,
                f"'{owner.key}' is empty",
                f"write a condition under '{owner.key}:', e.g. 'segment: high_engagement'",
            )
            return None
        if isinstance(node, SequenceNode):
            return self.combine(node, owner, all_of, self.source(node))
        if not isinstance(node, MappingNode):
            self.error(
                node,
                f"'{owner.key}' should hold a condition, not {shape(node)}",
                "write the condition as 'key: value' lines, e.g. 'segment: high_engagement' "
                "or 'count: product_view' with 'within:' and a comparison",
            )
            return None
        fields = self.mapping(node, "", help=None)
        if fields is None:
            return None
        constructs = [e for e in fields.values() if e.key in KEYWORDS]
        if len(constructs) > 1:
            first, second = constructs[0], constructs[1]
            self.error(
                second.key_node,
                f"'{first.key}' and '{second.key}' cannot be in the same condition",
                "a condition tests one thing; put each in its own condition under "
                "'all:' (both must hold) or 'any:' (either is enough)",
            )
            return None
        if not constructs:
            unknown = [e for e in fields.values() if op(e.key) is None and e.key not in MODIFIERS]
            for entry in unknown:
                self.unknown_key(
                    entry,
                    tuple(KEYWORDS),
                    "in a condition",
                    "A condition starts with one of",
                    limit=len(KEYWORDS),
                )
            if not unknown:
                self.error(
                    node,
                    "this condition does not say what to test",
                    "start it with one of: " + ", ".join(KEYWORDS),
                )
            return None
        construct = constructs[0]
        keyword = KEYWORDS[construct.key]
        keys_ok = self._condition_keys(keyword, fields)
        result = keyword.check(self, Cond(construct, fields, keys_ok, self.source(node)))
        return result if keys_ok else None

    def _condition_keys(self, keyword: Keyword, fields: Mapping[str, Entry]) -> bool:
        construct, allowed, takes_comparisons = keyword.name, keyword.takes, keyword.comparisons
        ok = True
        for entry in fields.values():
            key = entry.key
            if key == construct or key in allowed or (takes_comparisons and op(key)):
                continue
            ok = False
            if op(key) is not None:
                self.error(entry.key_node, f"'{key}' cannot be used with '{construct}'", keyword.comparison_help())
            elif key in keyword.key_help:
                self.error(entry.key_node, f"'{key}' cannot be used with '{construct}'", keyword.key_help[key])
            elif key in MODIFIERS:
                self.error(entry.key_node, f"'{key}' cannot be used with '{construct}'", keyword.usage())
            else:
                close = closest(key, [*allowed, *(COMPARISON_OPS if takes_comparisons else ())])
                if takes_comparisons and key.lower() in OP_SYNONYMS:
                    self.error(entry.key_node, f"unknown operator '{key}'", operator_help(key))
                elif close in COMPARISON_OPS:
                    self.error(entry.key_node, f"unknown operator '{key}'", operator_help(key))
                elif close:
                    self.error(entry.key_node, f"unknown key '{key}'", f"did you mean '{close}'? {keyword.usage()}")
                else:
                    self.error(entry.key_node, f"unknown key '{key}'", keyword.usage())
        return ok
