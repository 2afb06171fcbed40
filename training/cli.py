"""``larr train pretrain|embed|distill|ctr|all``: the stages in order, each through :mod:`larr.training.runner`.

``distill`` (optional, training/distill.py) narrows the stage-2 embedder; ``all`` runs it between stages 2 and 3
when ``ctr.embedder`` is ``distilled`` (stage 3 then reads it), and skips it otherwise.

Each stage module is also runnable under torchrun (``python -m larr.training.<stage>``) with the same
arguments. ``DIR/metrics.json`` collects every stage's results; ``DIR/config.yaml`` the resolved config.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from larr.data.schema import SPLITS
from larr.layout import Stage, Variant
from larr.training.runner import config_from_args, configure_train_parser, print_metrics
from larr.training.runner import run_stage as run_with_bookkeeping

# Heavy modules (torch, transformers, the stages) are imported inside the functions: `larr --help` and
# the parser stay light.

STAGES = tuple(stage.value for stage in Stage)
USER_SEEN = "user_seen"  # `larr evaluate --where` column: 1 when the row's user has a row in the train split
SCENE_SEEN = "scene_seen"  # `larr evaluate --where` column: 1 when every scene value of the row occurs in train

__all__ = [
    "SCENE_SEEN", "STAGES", "USER_SEEN", "config_from_args", "configure_evaluate_parser", "configure_train_parser", "run_all",
    "run_evaluate", "run_from_args", "run_stage",
]


def run_stage(stage: str | Stage, config, out: Path, resume: bool) -> dict:
    """Run one stage (its ``train``: stage 2 includes the no_stage1 embedder when that variant is configured)
    and merge its results into ``out/metrics.json``; returns them."""
    from larr.training import ctr, distill, embed, pretrain

    try:
        stage = Stage(stage)
    except ValueError:
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}") from None
    train = {Stage.PRETRAIN: pretrain.train, Stage.EMBED: embed.train, Stage.DISTILL: distill.train,
             Stage.CTR: ctr.train}[stage]
    return run_with_bookkeeping(stage, train, config, out, resume)


def pipeline(config) -> tuple[str, ...]:
    """The stages ``larr train all`` runs: 1 -> 2 -> 3, with the distillation before 3 when stage 3 reads it."""
    from larr.layout import EmbedderSource

    distilled = config.ctr.embedder is EmbedderSource.DISTILLED
    return tuple(s for s in STAGES if s != Stage.DISTILL.value or distilled)


def run_all(config, out: Path, resume: bool) -> dict:
    return {stage: run_stage(stage, config, out, resume) for stage in pipeline(config)}


def run_from_args(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    stages = pipeline(config) if args.stage == "all" else (args.stage,)
    for stage in stages:
        run_stage(stage, config, args.out, args.resume)
    print_metrics(args.out)
    return 0


def configure_evaluate_parser(parser: argparse.ArgumentParser) -> None:
    """The ``larr evaluate`` flags (larr.training.evaluate)."""
    _add_selection_flags(parser)
    parser.add_argument("--scores", type=Path, metavar="FILE",
                        help="also write each selected row's probability per variant (CSV)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def configure_predict_parser(parser: argparse.ArgumentParser) -> None:
    """The ``larr predict`` flags: the rows ``larr evaluate`` would select, their probabilities to a CSV."""
    _add_selection_flags(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="CSV: row, user_id, item_id, label, one probability column per variant")


def _add_selection_flags(parser: argparse.ArgumentParser) -> None:
    """Which run, split, variants and rows: shared by ``larr evaluate`` and ``larr predict``."""
    add = parser.add_argument
    add("--run", required=True, type=Path, help="run folder of `larr train` (config.yaml, embed/, ctr/)")
    add("--split", default="test", choices=SPLITS, help="which split to score (default: test)")
    add("--variant", action="append", choices=[v.value for v in Variant],
        help="CTR model to score, repeatable (default: every one trained in RUN)")
    add("--where", action="append", default=[], metavar="COLUMN=VALUE",
        help=f"keep rows whose COLUMN (a column of the split's CSV, or {USER_SEEN}: 1 = the user has rows in the "
        f"train split, 0 = a new user, or {SCENE_SEEN}: 1 = every scene value occurs in train) equals VALUE; "
        "repeatable (all must match)")
    add("--held-out-scenes", nargs="?", const="", default=None, metavar="F,G",
        help="keep rows with a value of scene feature F or G (the flag alone: of any scene feature) that no train "
        "row has: the cold-start slice, computed from the dataset")
    add("--users", type=Path, metavar="FILE", help="keep rows of the users FILE lists (one id per line)")
    add("--data", type=Path, help="dataset folder (default: the one RUN/config.yaml names)")


def run_evaluate(args: argparse.Namespace) -> int:
    from larr.training.evaluate import run_evaluate as evaluate_main

    return evaluate_main(args)


def run_predict(args: argparse.Namespace) -> int:
    from larr.training.evaluate import run_predict as predict_main

    return predict_main(args)
