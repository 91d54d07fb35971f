"""Problems found in rule files, rendered the way compilers show them: message, place, line, caret.

```
error: unknown operator 'greater'
  --> rules/engagement.yaml:12:9
   |
12 |         greater: 2
   |         ^^^^^^^
   = help: did you mean 'greater_than'? Operators: equals, not_equals, ...
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem at a place in a rule file.

    ``line`` and ``column`` are 1-based; ``line == 0`` means the problem concerns the whole file
    (or folder) and has no position. ``length`` is how many characters the caret underlines.
    """

    message: str
    file: str
    line: int
    column: int
    length: int = 1
    help: str | None = None

    def render(self, source_text: str | None = None) -> str:
        """The problem as text, with the offending line when ``source_text`` (the file) is given."""
        width = len(str(self.line)) if self.line > 0 else 1
        gutter = " " * (width + 1)
        out = [f"error: {self.message}"]
        if self.line <= 0:
            out.append(f"{' ' * width}--> {self.file}")
        else:
            out.append(f"{' ' * width}--> {self.file}:{self.line}:{self.column}")
            source_line = _line_of(source_text, self.line)
            if source_line is not None:
                out.append(f"{gutter}|")
                out.append(f"{self.line} | {source_line}")
                out.append(f"{gutter}| {_underline(source_line, self.column, self.length)}")
        if self.help:
            out.append(f"{gutter}= help: {self.help}")
        # Trailing blanks would make expected-output files fragile (editors strip them).
        return "\n".join(line.rstrip() for line in out)


class RuleLoadError(Exception):
    """Rule files that cannot be loaded; ``diagnostics`` holds every problem found, in file order.

    ``str(error)`` (also ``error.rendered``) is every diagnostic rendered, separated by blank
    lines, then a summary line such as ``error: 3 problems in 2 files``.
    """

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: Mapping[str, str] | None = None):
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        self.rendered: str = render_all(self.diagnostics, sources or {})
        super().__init__(self.rendered)


def render_all(diagnostics: Iterable[Diagnostic], sources: Mapping[str, str]) -> str:
    """All diagnostics rendered against their files' text, then the summary line."""
    items = list(diagnostics)
    blocks = [d.render(sources.get(d.file)) for d in items]
    blocks.append(summary(items))
    return "\n\n".join(blocks)


def summary(diagnostics: Iterable[Diagnostic]) -> str:
    """``error: 3 problems in 2 files`` (singular forms for one)."""
    items = list(diagnostics)
    files = len({d.file for d in items})
    problems = len(items)
    return (
        f"error: {problems} {'problem' if problems == 1 else 'problems'} "
        f"in {files} {'file' if files == 1 else 'files'}"
    )


def _line_of(source_text: str | None, line: int) -> str | None:
    if source_text is None:
        return None
    lines = source_text.splitlines()
    if line > len(lines):
        # PyYAML reports "end of stream" problems one line past the last one.
        return "" if line == len(lines) + 1 else None
    return lines[line - 1].rstrip()


def _underline(source_line: str, column: int, length: int) -> str:
    prefix = source_line[: column - 1]
    # Keep tabs so the carets line up under tab-indented text in a terminal.
    pad = "".join("\t" if ch == "\t" else " " for ch in prefix)
    pad += " " * (column - 1 - len(prefix))
    room = len(source_line) - (column - 1)
    return pad + "^" * max(1, min(length, room) if room > 0 else 1)
