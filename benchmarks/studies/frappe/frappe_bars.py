"""LARR on Frappe against the public BARS *Frappe_x1* leaderboard: convert -> stages 1-2 once -> stage 3 per seed.

The one command (slow: hours on 2 shared CPU cores; resumable — run it again after a kill and it skips what is done)::

    python benchmarks/studies/frappe/frappe_bars.py --raw ../shared/data/frappe --out runs/frappe
    python benchmarks/studies/frappe/frappe_bars.py --raw ../shared/data/frappe --out runs/frappe --seeds 2021 2022 2023 2024 2025 \\
        --variants larr id_only no_stage1 no_stage2 no_alignment full_text --set ctr.max_epochs=30

Re-tabulate the finished runs of some variants without training anything (e.g. after a partial ablation run)::

    python benchmarks/studies/frappe/frappe_bars.py --out runs/frappe --variants id_only larr no_alignment --report-only

A quick smoke run (what ``tests/unit/benchmarks/studies/test_frappe_smoke.py`` does, with smaller models)::

    python benchmarks/studies/frappe/frappe_bars.py --out /tmp/frappe_smoke --results /tmp/frappe_smoke/results \\
        --limit-users 20 --seeds 2021 --variants id_only larr --set pretrain.max_steps=5 --set embed.max_steps=3

What it does, in order (``OUT`` = ``--out``):

1. ``OUT/data``: the raw Frappe folder converted by :func:`larr.data.frappe.convert_frappe` (the BARS split decoded
   exactly, the train negatives re-sampled with ``--convert-seed``). Done once; the data is research-only, so
   ``OUT`` must stay out of git (``runs/`` is ignored).
2. ``OUT/llm``: stages 1 (continual pretraining) and 2 (contrastive embedder) — **once**, with the config's
   ``seed``; the no-stage-1 ablation's embedder too when ``no_stage1`` is among the variants.
3. ``OUT/seed_<s>``: stage 3 for every seed ``s`` of ``--seeds``; only stage 3 varies with the seed (the
   ID/CTR model's initialisation, batch order and dropout). ``seed_<s>`` links ``pretrain``/``embed*`` to
   ``OUT/llm`` and writes each variant's ``result.json`` (``RunLayout.ctr_dir``); a (seed, variant) with a result is skipped.
4. ``--results`` (default ``benchmarks/studies/frappe/results/frappe``): ``results.json`` and ``results.md`` — test AUC /
   logloss mean ± sample std per variant, per-seed values, the BARS numbers beside them, the LARR − ID-only gap
   against the seeds' spread and the gap to the best BARS model (FinalMLP 0.9861). Model selection is on the
   validation split only (early stopping on validation AUC); the test split is read once per trained model.

``OUT/benchmark.json`` pins the converted data and the resolved config; resuming with a different one is an
error (use another ``--out``) rather than a silent mix of two set-ups.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path

import yaml

from larr.benchmarks.machine import cpu_model_name
from larr.errors import ConfigError
from larr.layout import RunLayout, Stage, Variant
from larr.models.backbone_config import BackboneKind
from larr.training.config import TrainConfig, load_config, parse_overrides, to_dict

DEFAULT_RAW = Path("../shared/data/frappe")
DEFAULT_OUT = Path("runs/frappe")
DEFAULT_RESULTS = Path("benchmarks/studies/frappe/results/frappe")
DEFAULT_SEEDS = (2021, 2022, 2023, 2024, 2025)  # five, like the BARS DeepFM anchor: 3 left LARR's gap at the noise
DEFAULT_CONFIG = "frappe"
CONVERT_SEED = 2024  # the train-negative sampler of the converter (fixed: every seed sees the same data)
PIN_FILE = "benchmark.json"
TIMINGS_FILE = "timings.json"
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"

#: BARS Frappe_x1 leaderboard, test (AUC, logloss); reczoo/BARS ``ctr_prediction/leaderboard/frappe_x1.json``
#: at commit 3649158 (FuxiCTR; 10 categorical fields, embedding_dim 10, the same 7:2:1 split). See SOURCE.md.
BARS_FRAPPE_X1: dict[str, tuple[float, float]] = {
    "LR": (0.9356, 0.3076),
    "FM": (0.9671, 0.2065),
    "NFM": (0.9804, 0.2058),
    "DNN": (0.9833, 0.1622),
    "Wide&Deep": (0.9841, 0.1490),
    "DeepFM": (0.9842, 0.1482),
    "DCN": (0.9839, 0.1527),
    "DCN-V2": (0.9845, 0.1491),
    "xDeepFM": (0.9845, 0.1466),
    "AutoInt+": (0.9849, 0.1428),
    "DLRM": (0.9840, 0.1444),
    "DESTINE": (0.9856, 0.1434),
    # the two at the top of the board (reczoo/BARS docs/CTR/leaderboard/frappe_x1.csv, later than the commit above)
    "FinalNet": (0.9857, 0.1311),
    "FinalMLP": (0.9861, 0.1484),
}
#: BARS DeepFM over 5 seeds (benchmarks/DeepFM/DeepFM_frappe_x1/README.md): the issue's anchor "DeepFM 0.9840".
BARS_DEEPFM_5_SEEDS = {"auc": 0.983947, "auc_std": 0.00016, "logloss": 0.149462, "logloss_std": 0.0018}
BEST_BARS = ("FinalMLP", BARS_FRAPPE_X1["FinalMLP"][0])
#: What our ID-only model is checked against, by backbone: BARS's own run of that architecture on Frappe_x1
#: (FinalMLP: ranking/ctr/FinalMLP/FinalMLP_frappe_x1/README.md, one run, AUC 0.986072).
PROTOCOL_REFERENCES: dict[str, tuple[str, float]] = {
    BackboneKind.DEEPFM.value: ("BARS DeepFM, 5 seeds", BARS_DEEPFM_5_SEEDS["auc"]),
    BackboneKind.DCNV2.value: ("BARS DCN-V2", BARS_FRAPPE_X1["DCN-V2"][0]),
    BackboneKind.DNN.value: ("BARS DNN", BARS_FRAPPE_X1["DNN"][0]),
    BackboneKind.FINALMLP.value: ("BARS FinalMLP", 0.986072),
}
PROTOCOL_TOLERANCE = 0.001  # |ID-only − BARS's same backbone| AUC within which our protocol counts as sound
METRICS = ("auc", "logloss", "gauc", "best_valid_auc")


@dataclass
class BenchmarkPlan:
    """Everything one invocation does; built from the command line by :func:`parse_args`."""

    raw: Path
    out: Path
    results: Path
    config: str = DEFAULT_CONFIG
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    variants: tuple[str, ...] | None = field(default=None, metadata={"help": "None: the config's ctr.variants"})
    limit_users: int | None = None
    convert_seed: int = CONVERT_SEED
    overrides: dict = field(default_factory=dict, metadata={"help": "dotted config key -> value (--set)"})
    report_only: bool = field(default=False, metadata={"help": "train nothing: tabulate the finished results"})

    @property
    def data_dir(self) -> Path:
        return self.out / "data"

    @property
    def llm_dir(self) -> Path:
        return self.out / "llm"

    def seed_dir(self, seed: int) -> Path:
        return self.out / f"seed_{seed}"


def log(message: str) -> None:
    print(f"[frappe_bars {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------- set-up


def base_config(plan: BenchmarkPlan) -> TrainConfig:
    """The resolved config of the LLM stages (and, with ``seed`` replaced, of stage 3)."""
    overrides = {**plan.overrides, "data": str(plan.data_dir)}
    if plan.variants is not None:
        overrides["ctr.variants"] = list(plan.variants)
    config = load_config(plan.config, overrides)
    if not config.ctr.variants:
        raise ValueError("no variants to train: give --variants or ctr.variants")
    return config


def pin_setup(plan: BenchmarkPlan, config: TrainConfig) -> None:
    """Write ``OUT/benchmark.json`` or check that the run in ``OUT`` was made with the same data and config.

    The variants and the seeds may change between invocations (adding some is the point of resuming); anything
    else would mix two set-ups in one table.
    """
    pinned = {
        "convert": {"seed": plan.convert_seed, "limit_users": plan.limit_users},
        "config": {k: v for k, v in to_dict(config).items() if k != "seed"},
        "llm_seed": config.seed,
    }
    pinned["config"]["ctr"] = {k: v for k, v in pinned["config"]["ctr"].items() if k != "variants"}
    pinned["config"].pop("threads", None)  # speed only
    path = plan.out / PIN_FILE
    if path.exists():
        before = json.loads(path.read_text(encoding="utf-8"))
        # a config key added to the code after the run was pinned counts as unchanged while it has its default
        defaults = to_dict(TrainConfig())
        before["config"] = _with_new_defaults(before.get("config", {}), pinned["config"], defaults)
        if before != pinned:
            changed = sorted(k for k in pinned if before.get(k) != pinned[k])
            raise ValueError(
                f"{path}: {plan.out} holds a run with a different {', '.join(changed)}; "
                "use another --out (or delete it) rather than mixing two set-ups"
            )
        return
    plan.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pinned, indent=2) + "\n", encoding="utf-8")


def _with_new_defaults(before: dict, now: dict, defaults: dict) -> dict:
    """``before`` plus every key of ``now`` it lacks whose value in ``now`` is the default (recursively)."""
    merged = dict(before)
    for key, value in now.items():
        if key not in before:
            if key in defaults and defaults[key] == value:
                merged[key] = value
        elif isinstance(value, dict) and isinstance(before[key], dict):
            merged[key] = _with_new_defaults(before[key], value, defaults.get(key, {}) or {})
    return merged


def add_timing(plan: BenchmarkPlan, key: str, seconds: float) -> None:
    """Accumulate wall seconds per step in ``OUT/timings.json`` (a resumed step adds to its earlier part)."""
    path = plan.out / TIMINGS_FILE
    timings = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    timings[key] = round(timings.get(key, 0.0) + seconds, 1)
    path.write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def convert_data(plan: BenchmarkPlan) -> None:
    """Step 1: the raw folder -> ``OUT/data`` (skipped when already there; :func:`pin_setup` checked it matches)."""
    if (plan.data_dir / "dataset.json").exists():
        log(f"data: {plan.data_dir} exists, skipping the conversion")
        return
    from larr.data.frappe import convert_frappe

    if not (plan.raw / "frappe.csv").exists():
        raise FileNotFoundError(f"{plan.raw}: no frappe.csv; --raw must name the raw Frappe folder (see SOURCE.md)")
    log(f"data: converting {plan.raw} -> {plan.data_dir} (limit_users={plan.limit_users})")
    started = time.perf_counter()
    dataset = convert_frappe(plan.raw, plan.data_dir, seed=plan.convert_seed, limit_users=plan.limit_users)
    add_timing(plan, "convert", time.perf_counter() - started)
    log("data: " + ", ".join(f"{s} {len(r)} rows ({int(r.label.sum())} positive)" for s, r in dataset.splits.items()))


def run_llm_stages(plan: BenchmarkPlan, config: TrainConfig) -> None:
    """Step 2: stages 1 and 2, once, into ``OUT/llm``; each is skipped when its model is there."""
    from larr.training import embed
    from larr.training.cli import run_stage
    from larr.training.loop import update_metrics_json

    llm = RunLayout(plan.llm_dir)
    variants = set(config.ctr.variants)
    if not any(v.uses_llm for v in variants):
        log(f"llm: only {Variant.ID_ONLY} requested, stages 1-2 not needed")
        return
    need_init = Variant.NO_STAGE1 in variants
    if not llm.pretrained_lm_dir.exists() or (need_init and not llm.base_lm_dir.exists()):
        log(f"stage 1: continual pretraining, {config.pretrain.max_steps} steps -> {llm.pretrain_dir}")
        started = time.perf_counter()
        run_stage(Stage.PRETRAIN, config, llm.root, resume=True)
        add_timing(plan, "stage1_pretrain", time.perf_counter() - started)
    if not llm.embedder_dir(Variant.LARR).exists():
        log(f"stage 2: contrastive embedder, {config.embed.max_steps} steps -> {llm.embed_dir(Variant.LARR)}"
            + (" (and the no-stage-1 ablation's)" if need_init else ""))
        started = time.perf_counter()
        run_stage(Stage.EMBED, config, llm.root, resume=True)  # also trains no_stage1's embedder when it is a variant
        add_timing(plan, "stage2_embed", time.perf_counter() - started)
    elif need_init and not llm.embedder_dir(Variant.NO_STAGE1).exists():
        # no_stage1 was added after stage 2 ran: train only its embedder
        log("stage 2: the no-stage-1 ablation's embedder")
        started = time.perf_counter()
        result = embed.run(config, llm.root, resume=True, variant=Variant.NO_STAGE1)
        ablation_dir = llm.embed_dir(Variant.NO_STAGE1)
        update_metrics_json(llm.metrics_file, ablation_dir.name, result)  # its section is named after its folder
        add_timing(plan, "stage2_embed", time.perf_counter() - started)
    log("llm: stages 1-2 ready in " + str(llm.root))


def link_llm_stages(plan: BenchmarkPlan, seed_dir: Path) -> None:
    """Make ``seed_dir/<stage>`` point at ``OUT/llm/<stage>`` (relative links), so stage 3 finds the frozen LLM."""
    seed_dir.mkdir(parents=True, exist_ok=True)
    for target in RunLayout(plan.llm_dir).llm_stage_dirs:
        link = seed_dir / target.name
        if target.exists() and not link.exists():
            os.symlink(os.path.relpath(target, seed_dir), link, target_is_directory=True)


def result_path(plan: BenchmarkPlan, seed: int, variant: Variant) -> Path:
    from larr.training.ctr import RESULT_FILE

    return RunLayout(plan.seed_dir(seed)).ctr_dir(variant) / RESULT_FILE


def run_ctr_seeds(plan: BenchmarkPlan, config: TrainConfig) -> None:
    """Step 3: stage 3 per seed; (seed, variant) pairs with a ``result.json`` are skipped."""
    from larr.training.cli import run_stage

    for seed in plan.seeds:
        pending = [v for v in config.ctr.variants if not result_path(plan, seed, v).exists()]
        done = [v for v in config.ctr.variants if v not in pending]
        if done:
            log(f"seed {seed}: already done {[v.value for v in done]}")
        if not pending:
            continue
        seed_dir = plan.seed_dir(seed)
        link_llm_stages(plan, seed_dir)
        for variant in pending:
            # one variant per call: progress and wall time per (seed, variant), at the price of re-embedding the
            # few thousand distinct texts (seconds) for every LLM variant
            log(f"seed {seed}: stage 3 variant {variant} (up to {config.ctr.max_epochs} epochs)")
            seeded = replace(config, seed=seed, ctr=replace(config.ctr, variants=(variant,)))
            started = time.perf_counter()
            run_stage(Stage.CTR, seeded, seed_dir, resume=True)
            add_timing(plan, f"stage3/{seed}/{variant}", time.perf_counter() - started)
            result = json.loads(result_path(plan, seed, variant).read_text(encoding="utf-8"))
            log(f"seed {seed}: {variant} test AUC {result['auc']:.4f} logloss {result['logloss']:.4f} "
                f"(valid AUC {result['best_valid_auc']:.4f}, {result['steps']} steps)")


# --------------------------------------------------------------------------------------------- summary


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for one value)."""
    if not values:
        raise ValueError("mean_std of no values")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(per_seed: dict[str, dict[int, dict]], backbone: str = BackboneKind.DEEPFM.value) -> dict:
    """Aggregate ``{variant: {seed: result}}`` into the table's numbers and the issue's verdicts.

    The protocol check compares ID-only with BARS's run of the same ``backbone`` (:data:`PROTOCOL_REFERENCES`).

    ``spread`` of a comparison is the larger of the two variants' sample stds; LARR "beats" ID-only when the
    mean gap exceeds it. The paired gap (same seed: same batch order) is reported too, with the number of seeds
    on which the variant is ahead.
    """
    variants = {}
    for variant, by_seed in per_seed.items():
        seeds = sorted(by_seed)
        row = {"seeds": seeds}
        for metric in METRICS:
            values = [by_seed[s][metric] for s in seeds]
            mean, std = mean_std(values)
            row[metric] = {"mean": mean, "std": std, "per_seed": dict(zip(map(str, seeds), values))}
        row["steps"] = {str(s): by_seed[s]["steps"] for s in seeds}
        variants[variant] = row
    summary: dict = {"variants": variants}
    if Variant.ID_ONLY in variants:
        id_auc = variants[Variant.ID_ONLY]["auc"]["mean"]
        reference, reference_auc = PROTOCOL_REFERENCES[backbone]
        summary["protocol_check"] = {
            "backbone": backbone,
            "id_only_auc": id_auc,
            "reference": reference,
            "reference_auc": reference_auc,
            "difference": id_auc - reference_auc,
            "tolerance": PROTOCOL_TOLERANCE,
            "sound": abs(id_auc - reference_auc) <= PROTOCOL_TOLERANCE,
        }
    gaps = {}
    for variant, row in variants.items():
        gaps[variant] = {"vs_best_bars": row["auc"]["mean"] - BEST_BARS[1]}
        if variant != Variant.ID_ONLY and Variant.ID_ONLY in variants:
            base = variants[Variant.ID_ONLY]
            stds = [s for s in (row["auc"]["std"], base["auc"]["std"]) if s is not None]
            gap = row["auc"]["mean"] - base["auc"]["mean"]
            paired_seeds = sorted(set(row["seeds"]) & set(base["seeds"]))
            paired = [per_seed[variant][s]["auc"] - per_seed[Variant.ID_ONLY][s]["auc"] for s in paired_seeds]
            paired_mean, paired_std = mean_std(paired) if paired else (None, None)
            spread = max(stds) if stds else None
            gaps[variant].update(
                vs_id_only=gap,
                spread=spread,
                beats_id_only_beyond_spread=None if spread is None else gap > spread,
                paired_gap_mean=paired_mean,
                paired_gap_std=paired_std,
                seeds_ahead=sum(d > 0 for d in paired),  # of len(paired) seeds: the paired sign count
                seeds_paired=len(paired),
            )
    summary["auc_gaps"] = gaps
    return summary


def collect(plan: BenchmarkPlan, variants: tuple[Variant, ...]) -> dict[str, dict[int, dict]]:
    """Every finished (seed, variant) result of the requested seeds and variants."""
    out: dict[str, dict[int, dict]] = {}
    for variant in variants:
        for seed in plan.seeds:
            path = result_path(plan, seed, variant)
            if path.exists():
                result = json.loads(path.read_text(encoding="utf-8"))
                out.setdefault(variant.value, {})[seed] = {k: result[k] for k in (*METRICS, "steps")}
    return out


def _fmt(mean: float, std: float | None, digits: int = 4) -> str:
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _signed(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


VARIANT_NOTES = {
    Variant.LARR: "LARR: stage-2 embedder, per-feature scene embeddings → aggregation encoder + alignment, item text",
    Variant.ID_ONLY: "ID-only backbone (the same backbone, no LLM input)",
    Variant.NO_STAGE1: "LARR, stage 2 started from the LM before stage 1",
    Variant.NO_STAGE2: "LARR on the stage-1 LM pooled as its checkpoint says (last token for a causal LM, mean for an "
    "encoder such as MiniLM), no contrastive tuning",
    Variant.NO_ALIGNMENT: "LARR with align_weight 0",
    Variant.FULL_TEXT: "LARR, the whole scene embedded as one text",
}


def render_markdown(report: dict) -> str:
    """``results.md``: the tables a reader wants first, then how it was made."""
    summary, setup = report["summary"], report["setup"]
    variants = summary["variants"]
    lines = [
        "# LARR on Frappe vs the BARS Frappe_x1 leaderboard",
        "",
        "Generated by `benchmarks/studies/frappe/frappe_bars.py` — do not edit by hand. Test split = BARS Frappe_x1 test (28,860 rows),",
        "decoded exactly" + (" (here only its rows of the user subset)" if setup["limit_users"] else "")
        + "; model selection (early stopping, best epoch) on the validation split only.",
        "",
        f"Seeds (stage 3): {', '.join(map(str, setup['seeds']))}. "
        + (f"Stages 1-2 ran once with seed {setup['llm_seed']}; " if set(variants) - {Variant.ID_ONLY.value}
           else "No LLM stages (ID-only only); ")
        + f"the train negatives were re-sampled once with seed {setup['convert_seed']}"
        + (f"; **subset: users < {setup['limit_users']}**" if setup["limit_users"] else "") + ".",
        "",
        "## Ours (mean ± sample std over seeds)",
        "",
        "| variant | test AUC | test logloss | test GAUC | valid AUC | AUC − ID-only | per-seed test AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, row in variants.items():
        gap = summary["auc_gaps"][variant].get("vs_id_only")
        per_seed = ", ".join(f"{s}: {v:.4f}" for s, v in row["auc"]["per_seed"].items())
        lines.append(
            f"| `{variant}` | {_fmt(row['auc']['mean'], row['auc']['std'])} | "
            f"{_fmt(row['logloss']['mean'], row['logloss']['std'])} | {_fmt(row['gauc']['mean'], row['gauc']['std'])} | "
            f"{_fmt(row['best_valid_auc']['mean'], row['best_valid_auc']['std'])} | {_signed(gap)} | {per_seed} |"
        )
    lines += ["", "Variants: " + "; ".join(f"`{v}` = {VARIANT_NOTES.get(v, v)}" for v in variants) + ".", ""]

    lines += ["## BARS Frappe_x1 (published, test)", "", "| model | test AUC | test logloss |", "|---|---|---|"]
    deepfm = BARS_DEEPFM_5_SEEDS
    lines.append(f"| DeepFM, 5 seeds (anchor) | {deepfm['auc']:.4f} ± {deepfm['auc_std']:.4f} | "
                 f"{deepfm['logloss']:.4f} ± {deepfm['logloss_std']:.4f} |")
    for model, (auc, loss) in BARS_FRAPPE_X1.items():
        lines.append(f"| {model} | {auc:.4f} | {loss:.4f} |")
    lines.append("")

    lines += ["## Verdicts", ""]
    check = summary.get("protocol_check")
    if check:
        lines.append(
            f"- Protocol: ID-only ({check['backbone']}) {check['id_only_auc']:.4f} vs {check['reference']} "
            f"{check['reference_auc']:.4f} "
            f"({_signed(check['difference'])}; tolerance ±{check['tolerance']}) → "
            + ("**sound**." if check["sound"] else "**NOT within tolerance**.")
        )
    for variant, gap in summary["auc_gaps"].items():
        if "vs_id_only" not in gap:
            continue
        if gap["spread"] is None:
            verdict = "one seed, so no spread to compare with"
        else:
            beyond = "beyond" if gap["beats_id_only_beyond_spread"] else "**not** beyond"
            verdict = f"{beyond} the seeds' spread (the larger sample std, {gap['spread']:.4f})"
        paired = ("" if gap["paired_gap_mean"] is None
                  else f"; paired per-seed gap {_fmt(gap['paired_gap_mean'], gap['paired_gap_std'])}, "
                  f"ahead on {gap['seeds_ahead']} of {gap['seeds_paired']} seeds")
        lines.append(f"- `{variant}` − ID-only: {_signed(gap['vs_id_only'])} AUC → {verdict}{paired}.")
    for variant in (Variant.LARR.value, Variant.ID_ONLY.value):
        if variant in summary["auc_gaps"]:
            lines.append(f"- `{variant}` vs the best BARS model ({BEST_BARS[0]} {BEST_BARS[1]:.4f}): "
                         f"{_signed(summary['auc_gaps'][variant]['vs_best_bars'])} AUC.")
    lines.append("")

    lines += [
        "## How to reproduce",
        "",
        "```",
        setup["command"],
        "```",
        "",
        "Needs the raw data in `../shared/data/frappe` (research licence: never commit it or anything converted from it).",
        "The run is resumable: run the same command again after an interruption; `--report-only` re-tabulates without training.",
        "",
        "Wall time (seconds) on " + setup["machine"] + ":",
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in setup["timings"].items()]
    lines += ["", "Resolved config (stage 3 runs it with `seed` = each seed above):", "", "```yaml",
              yaml.safe_dump(setup["config"], sort_keys=False).rstrip(), "```", ""]
    if setup.get("llm_metrics"):
        lines += ["Stages 1-2 (`OUT/llm/metrics.json`):", "", "```json",
                  json.dumps(setup["llm_metrics"], indent=2), "```", ""]
    return "\n".join(lines)


def data_fingerprint(data_dir: Path) -> dict[str, str]:
    """sha256 of each converted file: the same seed scores differently on another CPU model, and this tells a
    numerical difference apart from a different conversion (the train negatives are sampled)."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(data_dir.iterdir()) if path.is_file()}


def write_results(plan: BenchmarkPlan, config: TrainConfig, command: str) -> dict:
    """Step 4: ``results.json`` + ``results.md`` from the finished results; returns the report."""
    per_seed = collect(plan, config.ctr.variants)
    if not per_seed:
        raise RuntimeError(f"no finished results under {plan.out} for seeds {list(plan.seeds)}")
    timings_path = plan.out / TIMINGS_FILE
    llm_metrics_path = RunLayout(plan.llm_dir).metrics_file
    report = {
        "summary": summarise(per_seed, config.ctr.backbone.kind.value),
        "per_seed": {v: {str(s): r for s, r in by_seed.items()} for v, by_seed in per_seed.items()},
        "bars_frappe_x1": {m: {"auc": a, "logloss": l} for m, (a, l) in BARS_FRAPPE_X1.items()},
        "bars_deepfm_5_seeds": BARS_DEEPFM_5_SEEDS,
        "setup": {
            "command": command,
            "seeds": list(plan.seeds),
            "llm_seed": config.seed,
            "convert_seed": plan.convert_seed,
            "limit_users": plan.limit_users,
            "config": {**to_dict(config), "seed": "per seed (stage 3); stages 1-2: " + str(config.seed)},
            "timings": json.loads(timings_path.read_text(encoding="utf-8")) if timings_path.exists() else {},
            "llm_metrics": json.loads(llm_metrics_path.read_text(encoding="utf-8")) if llm_metrics_path.exists() else {},
            "data_sha256": data_fingerprint(plan.data_dir),
            "machine": f"{platform.machine()}, {cpu_model_name()}, {os.cpu_count()} CPUs (shared), torch threads "
            f"{config.threads}, Python {platform.python_version()}, torch {version('torch')}",
        },
    }
    plan.results.mkdir(parents=True, exist_ok=True)
    (plan.results / RESULTS_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (plan.results / RESULTS_MD).write_text(render_markdown(report), encoding="utf-8")
    log(f"results: {plan.results / RESULTS_MD}")
    return report


# --------------------------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None) -> BenchmarkPlan:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/studies/frappe/frappe_bars.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="raw Frappe folder (frappe.csv, meta.csv, nfm_split/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="run folder (data, models; keep it out of git)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where results.json/.md go")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file or shipped config name")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="stage-3 seeds")
    parser.add_argument("--llm-seed", type=int,
                        help="seed of stages 1-2 (default: the config's seed); one --out per stages-1/2 seed")
    parser.add_argument("--variants", nargs="+", help="stage-3 variants (default: the config's ctr.variants)")
    parser.add_argument("--limit-users", type=int, help="keep users 0..N-1 only (smoke runs)")
    parser.add_argument("--convert-seed", type=int, default=CONVERT_SEED, help="seed of the train-negative sampler")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (YAML syntax), e.g. --set ctr.max_epochs=30; repeatable")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: rewrite the results from the finished (seed, variant) runs in --out")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
    except ConfigError as error:
        parser.error(str(error))
    if "seed" in overrides or "data" in overrides:
        parser.error("--set seed/data: the runner sets these (use --seeds and --llm-seed, and --raw/--out)")
    if args.llm_seed is not None:
        overrides["seed"] = args.llm_seed  # stages 1-2 run with it; stage 3 replaces it per --seeds
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeat: {args.seeds}")
    return BenchmarkPlan(
        raw=args.raw, out=args.out, results=args.results, config=args.config, seeds=tuple(args.seeds),
        variants=tuple(args.variants) if args.variants else None, limit_users=args.limit_users,
        convert_seed=args.convert_seed, overrides=overrides, report_only=args.report_only,
    )


def run(plan: BenchmarkPlan, command: str) -> dict:
    """Convert, stages 1-2, stage 3 per seed, results: the whole benchmark (resumable)."""
    config = base_config(plan)  # CTRConfig refuses unknown variant names
    pin_setup(plan, config)
    if plan.report_only:
        return write_results(plan, config, command)
    started = time.perf_counter()
    convert_data(plan)
    run_llm_stages(plan, config)
    run_ctr_seeds(plan, config)
    log(f"all stages done in {time.perf_counter() - started:.0f} s (this invocation)")
    return write_results(plan, config, command)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plan = parse_args(argv)
    # the command that reproduces the table trains; --report-only only re-tabulates
    run(plan, "python benchmarks/studies/frappe/frappe_bars.py " + " ".join(a for a in argv if a != "--report-only"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
