"""``larr train pretrain|embed|ctr|all``: the stages in order, each through :mod:`larr.training.runner`.

Each stage module is also runnable under torchrun (``python -m larr.training.<stage>``) with the same
arguments. ``DIR/metrics.json`` collects every stage's results; ``DIR/config.yaml`` the resolved config.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from larr.layout import Stage
from larr.training.runner import config_from_args, configure_train_parser, print_metrics
from larr.training.runner import run_stage as run_with_bookkeeping

# Heavy modules (torch, transformers, the stages) are imported inside the functions: `larr --help` and
# the parser stay light.

STAGES = tuple(stage.value for stage in Stage)

__all__ = ["STAGES", "config_from_args", "configure_train_parser", "run_all", "run_from_args", "run_stage"]


def run_stage(stage: str | Stage, config, out: Path, resume: bool) -> dict:
    """Run one stage (its ``train``: stage 2 includes the no_stage1 embedder when that variant is configured)
    and merge its results into ``out/metrics.json``; returns them."""
    from larr.training import ctr, embed, pretrain

    try:
        stage = Stage(stage)
    except ValueError:
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}") from None
    train = {Stage.PRETRAIN: pretrain.train, Stage.EMBED: embed.train, Stage.CTR: ctr.train}[stage]
    return run_with_bookkeeping(stage, train, config, out, resume)


def run_all(config, out: Path, resume: bool) -> dict:
    return {stage: run_stage(stage, config, out, resume) for stage in STAGES}


def run_from_args(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        run_stage(stage, config, args.out, args.resume)
    print_metrics(args.out)
    return 0
