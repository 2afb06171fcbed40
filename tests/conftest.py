"""Fixtures shared by every test folder.

``tiny_run`` (session scope) trains a tiny run once per session, in-process, at the smallest sizes
that exercise all three stages (~30 s on 2 cores)::

    synthetic data at scale 0.1 -> pretrain 20 steps -> embed 5 steps -> ctr 1 epoch (larr, id_only)

Tests read it, never write into it. Set ``LARR_TEST_TINY_RUN=/path/to/run`` to reuse a run folder
made by ``larr train`` instead (its ``config.yaml`` names the dataset), e.g. while iterating on a test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

TINY_RUN_ENV = "LARR_TEST_TINY_RUN"
TINY_VARIANTS = ("larr", "id_only")


@dataclass(frozen=True)
class TinyRun:
    """A trained run: ``run_dir`` as written by ``larr train all --out run_dir``, on ``data_dir``."""

    data_dir: Path
    run_dir: Path

    @property
    def embedder_dir(self) -> Path:
        return self.run_dir / "embed" / "model"

    def ctr_dir(self, variant: str = "larr") -> Path:
        return self.run_dir / "ctr" / variant


def train_tiny_run(data_dir: Path, run_dir: Path) -> TinyRun:
    """Generate the data and run the three stages at the tiny sizes (module docstring)."""
    from larr.data.schema import write_dataset
    from larr.data.synth import SynthConfig, generate
    from larr.training.cli import STAGES, run_stage
    from larr.training.config import load_config

    synth = SynthConfig()
    scale = 0.1
    synth.train_rows, synth.valid_rows, synth.test_rows = (
        int(synth.train_rows * scale), int(synth.valid_rows * scale), int(synth.test_rows * scale),
    )
    write_dataset(data_dir, generate(synth))
    config = load_config("tiny", {
        "data": str(data_dir),
        "threads": 1,
        "pretrain.max_steps": 20,
        "embed.max_steps": 5,
        "ctr.max_epochs": 1,
        "ctr.variants": list(TINY_VARIANTS),
    })
    for stage in STAGES:
        run_stage(stage, config, run_dir, resume=False)
    return TinyRun(data_dir, run_dir)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    reuse = os.environ.get(TINY_RUN_ENV)
    if reuse:
        run_dir = Path(reuse).resolve()
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["data"]
        return TinyRun(Path(data).resolve(), run_dir)
    root = tmp_path_factory.mktemp("tiny_run")
    return train_tiny_run(root / "data", root / "run")
