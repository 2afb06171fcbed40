"""The layering contract (pyproject ``[tool.importlinter]``) holds, and breaks on a wrong-way import.

import-linter reads a package from one folder, while ``larr`` is assembled from several (top-level
folder X is ``larr.X``, pyproject's ``package-dir``). So the test copies the sources into the layout
an installed wheel has, and lints that copy in a subprocess with it first on ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]


def materialise(dest: Path) -> Path:
    """Copy every ``larr`` package to ``dest/larr/...`` as pyproject maps it; returns ``dest``."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools["package-dir"]
    for package in setuptools["packages"]:
        # the source folder: the longest mapped prefix, then the rest of the dotted name
        prefix = max((p for p in package_dir if package == p or package.startswith(p + ".")), key=len)
        source = ROOT / package_dir[prefix] / Path(*package[len(prefix):].lstrip(".").split(".") if package != prefix else ())
        target = dest / Path(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for file in source.glob("*.py"):
            shutil.copy2(file, target / file.name)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    return subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    pytest.importorskip("importlinter")
    return materialise(tmp_path_factory.mktemp("layers"))


def test_the_layering_contract_holds(tree):
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and "KEPT" in result.stdout


@pytest.mark.parametrize(
    "module, wrong_import",
    [
        ("larr/serving/runtime.py", "import larr.training.loop"),
        ("larr/export/repository.py", "import larr.training.config"),
        ("larr/models/embedder.py", "import larr.serving.runtime"),
        ("larr/clients/client.py", "import torch"),
    ],
)
def test_a_wrong_way_import_breaks_the_contract(tree, tmp_path, module, wrong_import):
    broken = tmp_path / "tree"
    shutil.copytree(tree, broken)
    path = broken / module
    path.write_text(path.read_text() + f"\n{wrong_import}  # noqa\n")
    result = lint(broken)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
