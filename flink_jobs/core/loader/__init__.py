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

import hashlib
from pathlib import Path
from typing import Mapping, Sequence

from .. import model, windows
from ..catalog import Catalog
from ..diagnostics import Diagnostic, RuleLoadError
from ..syntax import bounds
from ..syntax.help import suggest
from .catalog_file import CatalogChecker, is_catalog_text
from .checker import SUPPORTED_VERSION, Draft, FileChecker

__all__ = [
    "CATALOG_FILE",
    "SUPPORTED_VERSION",
    "RuleLoadError",
    "check_rules",
    "load_catalog",
    "load_rules",
    "load_rules_from_texts",
    "rule_set_version",
]

# The catalogue's file name beside the rule files (any file whose top level has 'catalog:' is one).
CATALOG_FILE = "catalog.yaml"


# ---- public API -------------------------------------------------------------------------------


def load_rules(
    paths: Sequence[str | Path],
    *,
    horizon: int = windows.DEFAULT_HORIZON,
    catalog: Catalog | None = None,
    known_scores: Sequence[str] | None = None,
) -> model.RuleSet:
    """Load rule files and folders (every ``*.yaml``/``*.yml`` directly inside, except names
    starting with ``_`` or ``.``), the event catalogue among them (or ``catalog`` when none is);
    raise ``RuleLoadError`` with every problem of every file. ``known_scores``: the scores rules
    may test, when not the catalogue's."""
    rule_set, diagnostics, sources = check_rules(paths, horizon=horizon, catalog=catalog, known_scores=known_scores)
    if rule_set is None:
        raise RuleLoadError(diagnostics, sources)
    return rule_set


def load_rules_from_texts(
    texts: Mapping[str, str],
    *,
    horizon: int = windows.DEFAULT_HORIZON,
    catalog: Catalog | None = None,
    known_scores: Sequence[str] | None = None,
) -> model.RuleSet:
    """Load rules (and their catalogue) from ``{file name: YAML text}`` without touching the
    filesystem (the job gets rule files from Kafka); raise ``RuleLoadError`` with every problem of
    every file."""
    rule_set, diagnostics = _check_texts(texts, horizon, catalog, known_scores)
    if rule_set is None:
        raise RuleLoadError(diagnostics, texts)
    return rule_set


def check_rules(
    paths: Sequence[str | Path],
    *,
    horizon: int = windows.DEFAULT_HORIZON,
    catalog: Catalog | None = None,
    known_scores: Sequence[str] | None = None,
) -> tuple[model.RuleSet | None, list[Diagnostic], dict[str, str]]:
    """Like ``load_rules`` but returns ``(rule set or None, problems, {file name: text})``.

    The rule set is None exactly when there are problems. File names are the paths as given
    (folder path joined with the file name), which is how messages show them.
    """
    texts, read_problems = _read_paths(paths)
    if read_problems and not texts:
        return None, sorted(read_problems, key=lambda d: d.file), texts
    rule_set, diagnostics = _check_texts(texts, horizon, catalog, known_scores)
    if read_problems:
        diagnostics = sorted([*read_problems, *diagnostics], key=lambda d: d.file)
        rule_set = None
    return rule_set, diagnostics, texts


def load_catalog(path: str | Path) -> Catalog:
    """One catalogue file; raise ``RuleLoadError`` with its problems."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleLoadError([Diagnostic(f"cannot read the catalogue: {exc.strerror}", name, 0, 0)]) from None
    checker = CatalogChecker(name, text)
    catalog = checker.check()
    if catalog is None:
        raise RuleLoadError(checker.diagnostics, {name: text})
    return catalog


def rule_set_version(texts: Mapping[str, str], catalog: Catalog | None = None) -> str:
    """``rs-`` and 12 hex digits of a SHA-256 over the sorted (file name, text) pairs, and the
    version of ``catalog`` when it is not among the texts. The file's name without its folder:
    the same files read as ``rules/``, ``./rules`` or an absolute path, or published as a set,
    are the same version."""
    digest = hashlib.sha256()
    if catalog is not None:
        digest.update(f"{catalog.version}\n".encode("ascii"))
    for name, text in sorted((n.replace("\\", "/").rsplit("/", 1)[-1], t) for n, t in texts.items()):
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


def _is_catalog(name: str, text: str) -> bool:
    return Path(name).stem == Path(CATALOG_FILE).stem or is_catalog_text(text)


def _check_texts(
    texts: Mapping[str, str], horizon: int, catalog: Catalog | None, known_scores: Sequence[str] | None
) -> tuple[model.RuleSet | None, list[Diagnostic]]:
    diagnostics: list[Diagnostic] = []
    catalog_names = [name for name in sorted(texts) if _is_catalog(name, texts[name])]
    for extra in catalog_names[1:]:
        diagnostics.append(
            Diagnostic(
                "a second event catalogue",
                extra,
                0,
                0,
                help=f"the rules are checked against one catalogue, {catalog_names[0]}: merge the two into it",
            )
        )
    given = catalog
    if catalog_names:
        checker = CatalogChecker(catalog_names[0], texts[catalog_names[0]])
        catalog = checker.check()
        diagnostics.extend(checker.diagnostics)
    elif catalog is None:
        diagnostics.append(
            Diagnostic(
                "no event catalogue",
                CATALOG_FILE,
                0,
                0,
                help=f"rules are checked against the events a company sends: put {CATALOG_FILE} beside the rule "
                "files (rules/catalog.yaml is an example; rules/README.md describes it)",
            )
        )
    if catalog is None or diagnostics:
        # The rules would only repeat what the catalogue's problems cause.
        return None, sorted(diagnostics, key=lambda d: (d.file, d.line, d.column))
    drafts: list[Draft] = []
    scores = None if known_scores is None else tuple(known_scores)
    for name in sorted(texts):
        if name in catalog_names:
            continue
        file_checker = FileChecker(name, texts[name], horizon, catalog, scores)
        drafts.extend(file_checker.check())
        diagnostics.extend(file_checker.diagnostics)
        if len(drafts) > bounds.MAX_SEGMENTS:
            over = drafts[bounds.MAX_SEGMENTS]
            message = f"more than {bounds.MAX_SEGMENTS:,} segments in the rule set"
            advice = "a set this large is not reviewable; remove unused segments, or run another job for another team's rules"
            diagnostics.append(over.id_place.diagnostic(message, advice) if over.id_place else Diagnostic(message, name, 0, 0, help=advice))
            return None, sorted(diagnostics, key=lambda d: (d.file, d.line, d.column))

    first_by_id: dict[str, Draft] = {}
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
                        suggest(ref.target, known, None)
                        or "no rule file defines a segment with this id; check the spelling",
                    )
                )
    diagnostics.extend(_cycle_problems(first_by_id))

    # Files were read in name order; cross-file problems go to their place among the others.
    diagnostics.sort(key=lambda d: (d.file, d.line, d.column))
    if diagnostics:
        return None, diagnostics
    segments = tuple(d.segment for d in drafts if d.segment is not None)
    version = rule_set_version(texts, given if not catalog_names else None)
    return model.RuleSet(segments=segments, version=version, catalog=catalog), []


def _cycle_problems(by_id: Mapping[str, Draft]) -> list[Diagnostic]:
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


def _cycle_problem(by_id: Mapping[str, Draft], loop: list[str]) -> Diagnostic:
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


