"""The model repository's files: version folders emptied before an export, the adapters and the PyTorch artifacts
copied in, configs read and rewritten in place, files hard-linked where the file system allows it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from larr.export.model_configs import config_text, parse_config_text
from larr.export.options import ADAPTER_FILE, TORCH_DIR, VERSION, DatasetFacts, RepositoryError
from larr.layout import packaged_adapters_dir
from larr.serving.runtime import SERVING_META_FILE


def checked_adapters_dir(adapters_dir: Path | None, out: Path) -> Path:
    """The folder the ``<model>/1/model.py`` adapters are copied from (default: the installed ones), checked to
    exist and not to hold ``out``: an export empties its version folders, which would delete the adapters."""
    adapters_dir = Path(adapters_dir) if adapters_dir is not None else packaged_adapters_dir()
    if not adapters_dir.is_dir():
        raise RepositoryError(f"{adapters_dir}: the folder with the model.py adapters (--adapters) is missing")
    resolved, out = adapters_dir.resolve(), Path(out).resolve()
    if resolved == out or resolved in out.parents:  # out is the adapters' folder or inside it
        raise RepositoryError(
            f"{out}: this is where the adapters are copied from ({adapters_dir}); write the repository elsewhere, "
            "e.g. into the run folder (the default of `larr export`)"
        )
    return adapters_dir


def fresh_version_dir(model_dir: Path) -> Path:
    """Empty ``model_dir/1`` so no artifact of an earlier export (a plan, external data) lingers."""
    version_dir = model_dir / VERSION
    if version_dir.exists():
        for entry in version_dir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    version_dir.mkdir(parents=True, exist_ok=True)
    return version_dir


def copy_adapters(adapters_dir: Path, out: Path, models: tuple[str, ...], report: Callable[[str], None]) -> None:
    """Each python model's ``model.py`` adapter from ``adapters_dir`` into its version folder (warned when missing)."""
    for name in models:
        source = adapters_dir / name / VERSION / ADAPTER_FILE
        if not source.exists():
            warnings.warn(f"{source}: adapter missing; model {name!r} will not load until it is there", stacklevel=3)
        else:
            shutil.copy2(source, out / name / VERSION / ADAPTER_FILE)
            report(f"{name}: {out / name / VERSION / ADAPTER_FILE}")


def copy_embedder_torch(embedder_dir: Path, version_dir: Path, report: Callable[[str], None]) -> None:
    """Runtime "torch": the TextEmbedder folder itself, as ``version_dir/torch``."""
    embedder_torch = version_dir / TORCH_DIR
    shutil.copytree(embedder_dir, embedder_torch)
    report(f"{version_dir.parent.name}: {embedder_torch} (PyTorch)")


def copy_ctr_torch(ctr_dir: Path, dataset: DatasetFacts, version_dir: Path, report: Callable[[str], None]) -> None:
    """Runtime "torch": a CTR model's spec, weights and vocabulary plus the id ranges it serves, as ``version_dir/torch``."""
    from larr.models.ctr_model import SPEC_FILE, VOCAB_FILE, WEIGHTS_FILE

    ctr_torch = version_dir / TORCH_DIR
    ctr_torch.mkdir()
    for name in (SPEC_FILE, WEIGHTS_FILE, VOCAB_FILE):  # not checkpoint.pt: optimizer state, not needed to serve
        shutil.copy2(ctr_dir / name, ctr_torch / name)
    meta = {"num_users": dataset.num_users, "num_items": dataset.num_items}
    (ctr_torch / SERVING_META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    report(f"{version_dir.parent.name}: {ctr_torch} (PyTorch)")


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Hard-link a file (an exported 0.5B embedder is 2 GB), copying where the file system cannot (another
    device, no permission, too many links); any other error is raised."""
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(source, target)


def read_config(path: Path) -> mc.ModelConfig:
    return parse_config_text(path.read_text(encoding="utf-8"))


def rewrite_config(path: Path, config: mc.ModelConfig) -> None:
    """Replace the file at ``path`` (not the content of a file it is a hard link of) with ``config``."""
    text = config_text(config)
    path.unlink(missing_ok=True)  # it may be a hard link to another repository's file
    path.write_text(text, encoding="utf-8")


__all__ = [
    "checked_adapters_dir",
    "copy_adapters",
    "copy_ctr_torch",
    "copy_embedder_torch",
    "fresh_version_dir",
    "link_or_copy",
    "read_config",
    "rewrite_config",
]
