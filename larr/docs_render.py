"""``larr docs render``: fill the result tables of README.md and docs/*.md from the committed results files.

A table's place in a document is a pair of marker lines, each on its own line::

    <!-- render: frappe-finalmlp -->
    (what the renderer wrote: never edit it by hand)
    <!-- /render -->

``larr docs render`` replaces what lies between each pair with the table that ``larr.result_tables.TABLES[NAME]``
renders from the results files; ``larr docs render --check`` writes nothing and exits 1, printing a diff, when a
block differs from what its results give, when a marker names no known table, or when a results file is missing
(a test runs the check on the repository, so a number typed by hand or left stale fails it). Markers inside fenced
code blocks are text, not markers. Run it from the repository root, or pass ``--root``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from larr.errors import UserError

Renderer = Callable[[Path], str]  # the repository root -> a table's markdown (larr.result_tables)

OPEN = re.compile(r"^<!-- render: (?P<name>[A-Za-z0-9_.-]+) -->$")
CLOSE = "<!-- /render -->"
FENCE = re.compile(r"^(```|~~~)")


class MarkerError(UserError):
    """A document's markers do not pair up: an opening marker without its close, or a close without an opening."""


@dataclass(frozen=True)
class Block:
    """One marker pair: the table's name and the line numbers (0-based) of its two marker lines."""

    name: str
    open_line: int
    close_line: int


@dataclass(frozen=True)
class Rendered:
    """One document: its text as committed, as rendered, and what kept any block from rendering."""

    path: Path
    committed: str
    rendered: str
    problems: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.rendered != self.committed

    def diff(self, root: Path) -> str:
        name = self.path.relative_to(root) if self.path.is_relative_to(root) else self.path
        return "".join(difflib.unified_diff(self.committed.splitlines(keepends=True),
                                            self.rendered.splitlines(keepends=True),
                                            fromfile=f"{name} (committed)", tofile=f"{name} (rendered)"))


def documents(root: Path) -> list[Path]:
    """README.md and docs/*.md under ``root``: the files whose markers are rendered."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def find_blocks(text: str, where: str = "<text>") -> list[Block]:
    """The marker pairs of ``text`` in order (``where`` names it in errors); lines in fenced code are skipped."""
    blocks, opened, fenced = [], None, False
    for number, line in enumerate(text.splitlines()):
        line = line.rstrip()
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        if fenced:
            continue
        match = OPEN.match(line)
        if match:
            if opened is not None:
                raise MarkerError(f"{where}:{number + 1}: a render marker opens before the one at line "
                                  f"{opened[1] + 1} is closed")
            opened = (match["name"], number)
        elif line == CLOSE:
            if opened is None:
                raise MarkerError(f"{where}:{number + 1}: {CLOSE} closes no render marker")
            blocks.append(Block(opened[0], opened[1], number))
            opened = None
    if opened is not None:
        raise MarkerError(f"{where}:{opened[1] + 1}: render marker {opened[0]!r} has no {CLOSE}")
    return blocks


def render_text(text: str, root: Path, tables: Mapping[str, Renderer], where: str = "<text>") -> tuple[str, list[str]]:
    """``text`` with every block replaced by its table, and the problems of the blocks left as they were (an
    unknown table name, a missing or unusable results file)."""
    lines = text.splitlines(keepends=True)
    problems: list[str] = []
    for block in reversed(find_blocks(text, where)):  # from the end, so earlier line numbers stay valid
        if block.name not in tables:
            problems.append(f"{where}:{block.open_line + 1}: no table is named {block.name!r} "
                            f"(known: {', '.join(sorted(tables))})")
            continue
        try:
            table = tables[block.name](root)
        except UserError as error:
            problems.append(f"{where}:{block.open_line + 1}: {block.name}: {error}")
            continue
        except KeyError as error:
            problems.append(f"{where}:{block.open_line + 1}: {block.name}: its results file has no field {error}")
            continue
        # right after the opening marker and up to the closing one: a comment line ends its HTML block, so the
        # table needs no blank line around it (README's length is counted)
        lines[block.open_line + 1:block.close_line] = [table.rstrip("\n") + "\n"]
    return "".join(lines), problems[::-1]  # in the order of the document


def render_documents(root: Path, tables: Mapping[str, Renderer] | None = None) -> list[Rendered]:
    """Every document under ``root`` rendered with ``tables`` (default: every table ``larr.result_tables`` knows)."""
    if tables is None:
        from larr.result_tables import TABLES  # reads results with larr.benchmarks' statistics: only when rendering

        tables = TABLES
    results = []
    for path in documents(root):
        committed = path.read_text(encoding="utf-8")
        rendered, problems = render_text(committed, root, tables, str(path.relative_to(root)))
        results.append(Rendered(path, committed, rendered, tuple(problems)))
    return results


def run_docs_render(args: argparse.Namespace) -> int:
    root = Path(args.root).resolve()
    if not (root / "README.md").is_file():
        raise UserError(f"{root} has no README.md: run from the repository root or pass --root")
    results = render_documents(root)
    problems = [p for r in results for p in r.problems]
    for problem in problems:
        print(problem, file=sys.stderr)
    changed = [r for r in results if r.changed]
    if args.check:
        for result in changed:
            print(result.diff(root), end="")
        if changed:
            names = ", ".join(str(r.path.relative_to(root)) for r in changed)
            print(f"stale result tables in {names}: run `larr docs render`", file=sys.stderr)
        return 1 if changed or problems else 0
    for result in changed:
        result.path.write_text(result.rendered, encoding="utf-8")
        print(f"rendered {result.path.relative_to(root)}")
    return 1 if problems else 0


def configure_docs_parser(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="docs_command", required=True)
    render = commands.add_parser("render", help="fill README's and docs/'s result tables from the committed results "
                                 "files (between <!-- render: NAME --> and <!-- /render --> lines)")
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with a diff when a table differs from its results")
    render.add_argument("--root", default=".", type=Path, help="repository root (default: the current folder)")
    render.set_defaults(func=run_docs_render)
