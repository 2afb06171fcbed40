"""``larr train pretrain|embed|ctr|all``: argument parsing and stage orchestration.

Each stage module is also runnable under torchrun (``python -m larr.training.<stage>``) with the same
arguments. ``DIR/metrics.json`` collects every stage's results; ``DIR/config.yaml`` the resolved config.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

# Heavy modules (torch, transformers) are imported inside the functions: `larr --help` and the parser
# stay light.

STAGES = ("pretrain", "embed", "ctr")


def configure_train_parser(parser: argparse.ArgumentParser, with_stage: bool = True) -> None:
    if with_stage:
        parser.add_argument("stage", choices=(*STAGES, "all"), help="which stage to run ('all': 1 -> 2 -> 3)")
    parser.add_argument("--config", default="tiny", help="YAML config file, or a shipped config name (default: tiny)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, models, metrics.json")
    parser.add_argument("--data", help="dataset folder (overrides the config's `data`)")
    parser.add_argument("--base-model", help="local Hugging Face causal-LM folder for stage 1 (default: tiny from scratch)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set ctr.max_epochs=2 (YAML value syntax); repeatable",
    )


def config_from_args(args: argparse.Namespace):
    from larr.training.config import load_config

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    if args.data:
        overrides["data"] = args.data
    if args.base_model:
        overrides["pretrain.base_model"] = args.base_model
    return load_config(args.config, overrides)


def run_stage(stage: str, config, out: Path, resume: bool) -> dict:
    """Run one stage and merge its results into ``out/metrics.json``; returns them."""
    import torch

    from larr.training import ctr, embed, pretrain
    from larr.training.config import save_config
    from larr.training.loop import init_distributed, update_metrics_json

    ctx = init_distributed()
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    started = time.perf_counter()
    if stage == "pretrain":
        result = pretrain.run(config, out, resume, save_init="no_stage1" in config.ctr.variants)
    elif stage == "embed":
        result = embed.run(config, out, resume)
        if "no_stage1" in config.ctr.variants:
            ablation = embed.run(config, out, resume, source="init", name="embed_no_stage1")
            if ctx.is_main:
                result["recall@10"]["no_stage1"] = ablation["recall@10"]["stage2"]
    elif stage == "ctr":
        result = ctr.run(config, out, resume)
    else:
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
    if ctx.is_main:
        result = {**result, "wall_seconds": round(time.perf_counter() - started, 1)}
        update_metrics_json(out / "metrics.json", stage, result)
    return result


def run_all(config, out: Path, resume: bool) -> dict:
    return {stage: run_stage(stage, config, out, resume) for stage in STAGES}


def run_from_args(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        run_stage(stage, config, args.out, args.resume)
    from larr.training.loop import init_distributed

    ctx = init_distributed()
    if ctx.is_main:
        print(json.dumps(json.loads((Path(args.out) / "metrics.json").read_text()), indent=2))
    return 0


def run_stage_from_argv(stage: str, argv: list[str] | None) -> int:
    """Entry point of ``python -m larr.training.<stage>`` (and torchrun)."""
    parser = argparse.ArgumentParser(prog=f"python -m larr.training.{stage}", description=f"LARR stage: {stage}")
    configure_train_parser(parser, with_stage=False)
    args = parser.parse_args(argv)
    args.stage = stage
    return run_from_args(args)
