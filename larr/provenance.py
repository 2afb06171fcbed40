"""Which code produced a result: the git commit of the source checkout it ran from.

Results files record it as ``code_commit`` so a table rendered from them can name the code behind its numbers
(``larr docs render``). Outside a git checkout (an installed wheel) there is no commit to name, and ``None`` says so.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def code_commit(checkout: Path = _PACKAGE_DIR) -> str | None:
    """HEAD's full hash of the git checkout that holds ``checkout``, with ``-dirty`` appended when tracked files
    differ from it (the numbers then came from code no commit holds); ``None`` when it is not in a checkout."""
    head = _git(checkout, "rev-parse", "HEAD")
    if head is None:
        return None
    changed = _git(checkout, "status", "--porcelain", "--untracked-files=no")
    return f"{head}-dirty" if changed else head


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
