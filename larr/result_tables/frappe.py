"""The Frappe tables: LARR on FinalMLP against our ID-only FinalMLP over the replication, DeepFM against the BARS
board, and the companion methods on Frappe."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from larr.benchmarks.summary import mean_ci95
from larr.result_tables.sources import ResultsError, Source, ahead, check_stored, mean_sd, signed, source_line, table

# --------------------------------------------------------------------------------------------- Frappe, FinalMLP


def frappe_finalmlp_table(summary: Source, groups: Sequence[Source]) -> str:
    """The confirmatory replication of LARR on FinalMLP: LARR and our ID-only FinalMLP over every run, the paired gap
    with its 95 % t-interval over the per-group (stages-1/2 seed) mean gaps, and BARS's single published FinalMLP.

    ``summary`` is ``frappe_llm_seeds``' summary; ``groups`` the ``frappe_bars`` results file of each of its stages-1/2
    seeds, in the summary's order, for the ID-only runs (each checked against the summary's LARR AUC − gap)."""
    llm_seeds = summary.data["llm_seeds"]
    larr = [auc for g in llm_seeds for auc in g["larr_auc"]]
    gaps = [gap for g in llm_seeds for gap in g["gaps"]]
    id_only = []
    for group, results in zip(llm_seeds, groups, strict=True):
        for seed, auc, gap in zip(group["stage3_seeds"], group["larr_auc"], group["gaps"], strict=True):
            run = results.data["per_seed"]["id_only"][str(seed)]["auc"]
            if not math.isclose(run, auc - gap, rel_tol=0, abs_tol=1e-9):
                raise ResultsError(f"{results.path}: ID-only seed {seed} scored {run}, the summary pairs {auc} − {gap}")
            id_only.append(run)
    gap_mean, gap_half = mean_ci95([statistics.fmean(g["gaps"]) for g in llm_seeds])
    larr_mean, larr_half = mean_ci95([statistics.fmean(g["larr_auc"]) for g in llm_seeds])
    check_stored(summary, "gap_mean", gap_mean)
    check_stored(summary, "gap_ci95", gap_half)
    check_stored(summary, "larr_mean", statistics.fmean(larr))
    bars = groups[0].data["bars_frappe_x1"]["FinalMLP"]
    check_stored(summary, "target", bars["auc"])
    per_group = "/".join(str(n) for n in sorted({len(g["larr_auc"]) for g in llm_seeds}))
    rows = [
        [f"**LARR on FinalMLP**, confirmatory replication ({len(llm_seeds)} stages-1/2 seeds × {per_group} stage-3 "
         "seeds)", f"{statistics.fmean(larr):.4f} ± {statistics.stdev(larr):.4f}", str(len(larr)),
         f"**{signed(gap_mean)}** [{signed(gap_mean - gap_half)}, {signed(gap_mean + gap_half)}]", ahead(gaps)],
        [f"ID-only FinalMLP (ours, the same {len(id_only)} stage-3 seeds)",
         f"{statistics.fmean(id_only):.4f} ± {statistics.stdev(id_only):.4f}", str(len(id_only)), "–", "–"],
        ["BARS FinalMLP (published, one run)", f"{bars['auc']:.4f}", "1", "–", "–"],
    ]
    lines = table(["model", "test AUC (mean ± std over runs)", "runs",
                    "paired gap over ID-only [95 % interval over stages-1/2 seeds]", "ahead"],
                   ["---", "---:", "---:", "---:", "---:"], rows)
    interval = (f"The 95 % interval of LARR's mean over the {len(llm_seeds)} stages-1/2 seeds' means (t, df "
                f"{len(llm_seeds) - 1}): [{larr_mean - larr_half:.4f}, {larr_mean + larr_half:.4f}].")
    files = f" and the {len(groups)} groups' `results.json` beside it"
    return "\n".join([*lines, "", interval, "", source_line(summary, also=files)])


def replication_groups_table(summary: Source) -> str:
    """The replication per stages-1/2 seed, as ``frappe_llm_seeds`` summarises it."""
    llm_seeds = summary.data["llm_seeds"]
    rows = [[str(g["llm_seed"]), ", ".join(map(str, g["stage3_seeds"])), f"{statistics.fmean(g['larr_auc']):.4f}",
             signed(statistics.fmean(g["gaps"])), ahead(g["gaps"])] for g in llm_seeds]
    lines = table(["stages-1/2 seed", "stage-3 seeds", "LARR test AUC (mean)", "paired gap over ID-only (mean)",
                    "ahead"], ["---:", "---", "---:", "---:", "---:"], rows)
    larr = [auc for g in llm_seeds for auc in g["larr_auc"]]
    gap_mean, gap_half = mean_ci95([statistics.fmean(g["gaps"]) for g in llm_seeds])
    _, stage3_half = mean_ci95([gap for g in llm_seeds for gap in g["gaps"]])
    check_stored(summary, "gap_ci95", gap_half)
    check_stored(summary, "stage3_only_ci95", stage3_half)
    notes = [
        f"- LARR mean test AUC {statistics.fmean(larr):.4f} ± {statistics.stdev(larr):.4f} (std over runs); the "
        f"board's best {summary.data['target']:.4f}.",
        f"- Paired gap {signed(gap_mean)}, 95 % interval over the stages-1/2 seeds [{signed(gap_mean - gap_half)}, "
        f"{signed(gap_mean + gap_half)}].",
        f"- For comparison only, the interval over stage-3 seeds alone (LLM-stage variance not counted): "
        f"±{stage3_half:.4f}.",
    ]
    return "\n".join([*lines, "", *notes, "", source_line(summary)])


def finalmlp_id_only_table(results: Source) -> str:
    """The first FinalMLP plan's ID-only backbone against BARS's published FinalMLP."""
    variant = results.data["summary"]["variants"]["id_only"]
    seeds = variant["seeds"]
    bars = results.data["bars_frappe_x1"]["FinalMLP"]
    rows = [["ID-only FinalMLP (ours)", mean_sd(variant["auc"]), mean_sd(variant["logloss"])],
            ["BARS FinalMLP (published, one run)", f"{bars['auc']:.4f}", f"{bars['logloss']:.4f}"]]
    seed_range = f"{min(seeds)}–{max(seeds)}" if seeds == list(range(min(seeds), max(seeds) + 1)) else ", ".join(map(str, seeds))
    lines = table([f"model (test, mean ± std over stage-3 seeds {seed_range})", "test AUC", "test logloss"],
                   ["---", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(results)])


# --------------------------------------------------------------------------------------------- Frappe, DeepFM

DEEPFM_LABELS = {
    "id_only": "ID-only backbone (our DeepFM)",
    "larr": "**LARR** (stage-2 embedder, per-feature scene → aggregation + alignment, item text)",
    "no_stage1": "LARR without stage 1 (stage 2 from the untrained LM)",
    "no_stage2": "LARR without stage 2 (stage-1 LM, last-token pooling)",
    "no_alignment": "LARR without alignment",
    "full_text": "LARR, whole scene as one text (`full_text`)",
}
BARS_ROWS = ("DCN-V2", "FinalMLP", "FinalNet", "DESTINE")


def frappe_deepfm_table(results: Source, board: Source) -> str:
    """Frappe on the DeepFM backbone: each variant's mean ± std over stage-3 seeds, its paired gap over ID-only, and
    the BARS board's published rows (from ``board``, a later results file: ``results`` predates the board's FinalNet
    and FinalMLP rows)."""
    summary = results.data["summary"]
    rows = []
    for name, variant in summary["variants"].items():
        gap = summary["auc_gaps"].get(name, {})
        paired = (f"{signed(gap['paired_gap_mean'])} ± {gap['paired_gap_std']:.4f}" if "paired_gap_mean" in gap else "–")
        ahead = f"{gap['seeds_ahead']} of {gap['seeds_paired']}" if "seeds_ahead" in gap else ""
        rows.append([DEEPFM_LABELS.get(name, f"`{name}`"), mean_sd(variant["auc"]), mean_sd(variant["logloss"]),
                     paired, ahead])
    anchor = results.data["bars_deepfm_5_seeds"]
    rows.append(["BARS DeepFM, 5 seeds (published)", f"{anchor['auc']:.4f} ± {anchor['auc_std']:.4f}",
                 f"{anchor['logloss']:.4f} ± {anchor['logloss_std']:.4f}", "", ""])
    published = board.data["bars_frappe_x1"]
    best_auc = max(published, key=lambda m: published[m]["auc"])
    best_logloss = min(published, key=lambda m: published[m]["logloss"])
    for model in BARS_ROWS:
        note = ", **best AUC on the board**" if model == best_auc else ", best logloss on the board" if model == best_logloss else ""
        rows.append([f"BARS {model}{note} (published)", f"{published[model]['auc']:.4f}",
                     f"{published[model]['logloss']:.4f}", "", ""])
    lines = table(["model", "test AUC", "test logloss", "AUC − ID-only (paired per seed)", "seeds ahead"],
                   ["---", "---:", "---:", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(results, note=f"; the board's rows from `{board.path}`")])


def companions_frappe_table(baseline: Source, options: Sequence[tuple[str, Source]]) -> str:
    """Companion options on Frappe (FinalMLP): each option's LARR test AUC over its stage-3 seeds and the paired Δ
    over ``baseline``'s LARR runs of the same seeds."""
    base = baseline.data["per_seed"]["larr"]
    rows = []
    for label, results in options:
        runs = results.data["per_seed"]["larr"]
        missing = [seed for seed in runs if seed not in base]
        if missing:
            raise ResultsError(f"{results.path}: seeds {missing} have no LARR run in {baseline.path} to pair with")
        aucs = [runs[seed]["auc"] for seed in runs]
        deltas = [runs[seed]["auc"] - base[seed]["auc"] for seed in runs]
        rows.append([label, f"{statistics.fmean(aucs):.4f} ± {statistics.stdev(aucs):.4f}",
                     f"{signed(statistics.fmean(deltas))} ± {statistics.stdev(deltas):.4f} ({ahead(deltas)})"])
    lines = table(["option (Frappe)", "test AUC", "paired Δ vs `larr` (seeds ahead)"], ["---", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(baseline, *(results for _, results in options))])

