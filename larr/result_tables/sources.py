"""Reading the results files a table is rendered from, the source line that names them and their commit, and the
small formatting helpers every table uses."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from larr.errors import UserError

SHORT_COMMIT = 7


class ResultsError(UserError):
    """A table cannot be rendered: its results file is missing, unreadable or records no commit."""


@dataclass(frozen=True)
class Source:
    """One results file a table reads: its path (relative to the repository root) and its parsed JSON."""

    path: str
    data: dict

    def commit_phrase(self) -> str:
        """'ran at commit `abc1234`' or, where the run recorded none, 'results committed at `abc1234`'."""
        if self.data.get("code_commit"):
            return f"ran at commit `{short(self.data['code_commit'])}`"
        if self.data.get("results_commit"):
            return f"results committed at `{short(self.data['results_commit'])}`"
        raise ResultsError(f"{self.path} records no commit: add `code_commit` (the commit it ran at) or, when that is "
                           "unknown, `results_commit` (the commit that committed it: `git log --follow -- FILE`)")


def read_source(root: Path, path: str) -> Source:
    file = root / path
    if not file.is_file():
        raise ResultsError(f"results file {path} is missing")
    try:
        return Source(path, json.loads(file.read_text(encoding="utf-8")))
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path} is not JSON: {error}") from error


def source_line(*sources: Source, note: str = "", also: str = "") -> str:
    """The table's last line: the files it was rendered from and the commit they ran at (a file that records none,
    e.g. a run's metrics beside the run's record, goes with the others' commit)."""
    recorded = [s for s in sources if s.data.get("code_commit") or s.data.get("results_commit")]
    phrases = {s.commit_phrase() for s in recorded} or {sources[0].commit_phrase()}  # none recorded: raises
    if len(phrases) == 1:
        text = " and ".join(f"`{s.path}`" for s in sources) + also + f", {phrases.pop()}"
    else:
        text = "; ".join(f"`{s.path}` ({s.commit_phrase()})" if s in recorded else f"`{s.path}`" for s in sources) + also
    return f"<sub>Rendered by `larr docs render` from {text}{note}.</sub>"


def short(commit: str) -> str:
    head, dirty, _ = commit.partition("-dirty")
    return head[:SHORT_COMMIT] + ("-dirty" if dirty else "")


def table(header: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table; ``align`` holds '---' (left) or '---:' (right) per column."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def signed(value: float, digits: int = 4) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def mean_sd(stats: dict, digits: int = 4) -> str:
    """'0.9852 ± 0.0006' from a {'mean', 'std'} summary (std None or absent: the mean alone)."""
    std = stats.get("std")
    return f"{stats['mean']:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def ahead(deltas: Sequence[float]) -> str:
    return f"{sum(d > 0 for d in deltas)} of {len(deltas)}"


def pct(share: float) -> str:
    return f"{100 * share:.0f} %"


def check_stored(source: Source, key: str, computed: float | None) -> None:
    """A summary's stored figure must be what its own per-run values give (else the file is inconsistent)."""
    stored = source.data.get(key)
    if stored is not None and computed is not None and not math.isclose(stored, computed, rel_tol=0, abs_tol=1e-9):
        raise ResultsError(f"{source.path}: {key} is {stored}, but its per-run values give {computed}")

