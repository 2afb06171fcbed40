"""The result tables README and docs/ show, each rendered from committed results files.

:data:`TABLES` maps a table's name — what a ``<!-- render: NAME -->`` marker names (``larr.docs_render``) — to a
function of the repository root that reads the table's results files and returns its markdown. Each function reads
first and then calls a pure ``*_table`` function of the parsed files, so the tables are tested on hand-built
results. Every table ends with a line naming its results files and the commit they ran at: a results file records
``code_commit`` (the commit whose code produced it) or, for a historical result whose run did not record it,
``results_commit`` (the commit that committed it), and a table is not rendered from a file that records neither.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from larr.benchmarks.summary import mean_ci95
from larr.errors import UserError

# Results files and folders, relative to the repository root.
FRAPPE = "benchmarks/studies/frappe/results/frappe"
FINALMLP = "benchmarks/studies/frappe/results/frappe-finalmlp"
REPLICATION_SUMMARY = f"{FINALMLP}/replicate-llm-seeds/summary.json"
SYNTHETIC_ABLATION = "benchmarks/results/synth-ablation-tiny"
STRICT_KNOWLEDGE = "benchmarks/studies/synth-strict-knowledge/results"
COMPANIONS = "benchmarks/studies/companions/results"
PRETRAINED_BASE = "benchmarks/studies/pretrained-base/results/results.json"
SERVING_CPU = "benchmarks/results/cpu-2core-amd-epyc/summary.json"
SERVING_CPU_FASTAPI = "benchmarks/results/cpu-2core-amd-epyc-store-warm-inprocess/summary.json"
SERVING_GPU = "benchmarks/results/gpu-nvidia-h200"
SOAK = "benchmarks/results/soak-cpu-2core/soak.json"
DEMO_TIMINGS = "benchmarks/results/demo-cpu-2core-amd-epyc/timings.json"

SHORT_COMMIT = 7
ABLATION_ORDER = ("larr", "id_only", "no_stage1", "no_stage2", "no_alignment", "full_text")
DEMO_STEPS = ("data", "training", "export", "serving", "querying", "benchmark")


class ResultsError(UserError):
    """A table cannot be rendered: its results file is missing, unreadable or records no commit."""


@dataclass(frozen=True)
class Source:
    """One results file a table reads: its path (relative to the repository root) and its parsed JSON."""

    path: str
    data: dict

    def commit_phrase(self) -> str:
        """'ran at commit `abc1234`' or, where the run recorded none, 'results committed at `abc1234`'."""
        if self.data.get("code_commit"):
            return f"ran at commit `{_short(self.data['code_commit'])}`"
        if self.data.get("results_commit"):
            return f"results committed at `{_short(self.data['results_commit'])}`"
        raise ResultsError(f"{self.path} records no commit: add `code_commit` (the commit it ran at) or, when that is "
                           "unknown, `results_commit` (the commit that committed it: `git log --follow -- FILE`)")


def read_source(root: Path, path: str) -> Source:
    file = root / path
    if not file.is_file():
        raise ResultsError(f"results file {path} is missing")
    try:
        return Source(path, json.loads(file.read_text(encoding="utf-8")))
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path} is not JSON: {error}") from error


def source_line(*sources: Source, note: str = "", also: str = "") -> str:
    """The table's last line: the files it was rendered from and the commit they ran at (a file that records none,
    e.g. a run's metrics beside the run's record, goes with the others' commit)."""
    recorded = [s for s in sources if s.data.get("code_commit") or s.data.get("results_commit")]
    phrases = {s.commit_phrase() for s in recorded} or {sources[0].commit_phrase()}  # none recorded: raises
    if len(phrases) == 1:
        text = " and ".join(f"`{s.path}`" for s in sources) + also + f", {phrases.pop()}"
    else:
        text = "; ".join(f"`{s.path}` ({s.commit_phrase()})" if s in recorded else f"`{s.path}`" for s in sources) + also
    return f"<sub>Rendered by `larr docs render` from {text}{note}.</sub>"


def _short(commit: str) -> str:
    head, dirty, _ = commit.partition("-dirty")
    return head[:SHORT_COMMIT] + ("-dirty" if dirty else "")


def _table(header: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table; ``align`` holds '---' (left) or '---:' (right) per column."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def _signed(value: float, digits: int = 4) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def _mean_sd(stats: dict, digits: int = 4) -> str:
    """'0.9852 ± 0.0006' from a {'mean', 'std'} summary (std None or absent: the mean alone)."""
    std = stats.get("std")
    return f"{stats['mean']:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def _ahead(deltas: Sequence[float]) -> str:
    return f"{sum(d > 0 for d in deltas)} of {len(deltas)}"


def _pct(share: float) -> str:
    return f"{100 * share:.0f} %"


def _check_stored(source: Source, key: str, computed: float | None) -> None:
    """A summary's stored figure must be what its own per-run values give (else the file is inconsistent)."""
    stored = source.data.get(key)
    if stored is not None and computed is not None and not math.isclose(stored, computed, rel_tol=0, abs_tol=1e-9):
        raise ResultsError(f"{source.path}: {key} is {stored}, but its per-run values give {computed}")


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
    _check_stored(summary, "gap_mean", gap_mean)
    _check_stored(summary, "gap_ci95", gap_half)
    _check_stored(summary, "larr_mean", statistics.fmean(larr))
    bars = groups[0].data["bars_frappe_x1"]["FinalMLP"]
    _check_stored(summary, "target", bars["auc"])
    per_group = "/".join(str(n) for n in sorted({len(g["larr_auc"]) for g in llm_seeds}))
    rows = [
        [f"**LARR on FinalMLP**, confirmatory replication ({len(llm_seeds)} stages-1/2 seeds × {per_group} stage-3 "
         "seeds)", f"{statistics.fmean(larr):.4f} ± {statistics.stdev(larr):.4f}", str(len(larr)),
         f"**{_signed(gap_mean)}** [{_signed(gap_mean - gap_half)}, {_signed(gap_mean + gap_half)}]", _ahead(gaps)],
        [f"ID-only FinalMLP (ours, the same {len(id_only)} stage-3 seeds)",
         f"{statistics.fmean(id_only):.4f} ± {statistics.stdev(id_only):.4f}", str(len(id_only)), "–", "–"],
        ["BARS FinalMLP (published, one run)", f"{bars['auc']:.4f}", "1", "–", "–"],
    ]
    lines = _table(["model", "test AUC (mean ± std over runs)", "runs",
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
             _signed(statistics.fmean(g["gaps"])), _ahead(g["gaps"])] for g in llm_seeds]
    lines = _table(["stages-1/2 seed", "stage-3 seeds", "LARR test AUC (mean)", "paired gap over ID-only (mean)",
                    "ahead"], ["---:", "---", "---:", "---:", "---:"], rows)
    larr = [auc for g in llm_seeds for auc in g["larr_auc"]]
    gap_mean, gap_half = mean_ci95([statistics.fmean(g["gaps"]) for g in llm_seeds])
    _, stage3_half = mean_ci95([gap for g in llm_seeds for gap in g["gaps"]])
    _check_stored(summary, "gap_ci95", gap_half)
    _check_stored(summary, "stage3_only_ci95", stage3_half)
    notes = [
        f"- LARR mean test AUC {statistics.fmean(larr):.4f} ± {statistics.stdev(larr):.4f} (std over runs); the "
        f"board's best {summary.data['target']:.4f}.",
        f"- Paired gap {_signed(gap_mean)}, 95 % interval over the stages-1/2 seeds [{_signed(gap_mean - gap_half)}, "
        f"{_signed(gap_mean + gap_half)}].",
        f"- For comparison only, the interval over stage-3 seeds alone (LLM-stage variance not counted): "
        f"±{stage3_half:.4f}.",
    ]
    return "\n".join([*lines, "", *notes, "", source_line(summary)])


def finalmlp_id_only_table(results: Source) -> str:
    """The first FinalMLP plan's ID-only backbone against BARS's published FinalMLP."""
    variant = results.data["summary"]["variants"]["id_only"]
    seeds = variant["seeds"]
    bars = results.data["bars_frappe_x1"]["FinalMLP"]
    rows = [["ID-only FinalMLP (ours)", _mean_sd(variant["auc"]), _mean_sd(variant["logloss"])],
            ["BARS FinalMLP (published, one run)", f"{bars['auc']:.4f}", f"{bars['logloss']:.4f}"]]
    seed_range = f"{min(seeds)}–{max(seeds)}" if seeds == list(range(min(seeds), max(seeds) + 1)) else ", ".join(map(str, seeds))
    lines = _table([f"model (test, mean ± std over stage-3 seeds {seed_range})", "test AUC", "test logloss"],
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
        paired = (f"{_signed(gap['paired_gap_mean'])} ± {gap['paired_gap_std']:.4f}" if "paired_gap_mean" in gap else "–")
        ahead = f"{gap['seeds_ahead']} of {gap['seeds_paired']}" if "seeds_ahead" in gap else ""
        rows.append([DEEPFM_LABELS.get(name, f"`{name}`"), _mean_sd(variant["auc"]), _mean_sd(variant["logloss"]),
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
    lines = _table(["model", "test AUC", "test logloss", "AUC − ID-only (paired per seed)", "seeds ahead"],
                   ["---", "---:", "---:", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(results, note=f"; the board's rows from `{board.path}`")])


# --------------------------------------------------------------------------------------------- synthetic data


def synthetic_ablation_table(run: Source, metrics: Source, full: bool = False) -> str:
    """Stage 3's variants on the synthetic test split, one seed: LARR, the ID-only baseline and the ablations
    (``full``: with logloss, GAUC and the best validation AUC)."""
    ctr = {name: result for name, result in metrics.data["ctr"].items() if isinstance(result, dict)}
    if "id_only" not in ctr:
        raise ResultsError(f"{metrics.path}: no id_only variant to measure the others against")
    names = [n for n in ABLATION_ORDER if n in ctr] + sorted(n for n in ctr if n not in ABLATION_ORDER)
    baseline = ctr["id_only"]["auc"]

    def delta(name: str) -> str:
        text = "0" if name == "id_only" else _signed(ctr[name]["auc"] - baseline)
        return f"**{text}**" if name == "larr" else text

    header, align = ["variant", "test AUC", "Δ AUC vs `id_only`"], ["---", "---:", "---:"]
    rows = [[f"`{n}`", f"{ctr[n]['auc']:.4f}", delta(n)] for n in names]
    if full:
        header, align = header + ["logloss", "GAUC", "valid AUC"], align + ["---:"] * 3
        for row, n in zip(rows, names):
            row += [f"{ctr[n]['logloss']:.4f}", f"{ctr[n]['gauc']:.4f}", f"{ctr[n]['best_valid_auc']:.4f}"]
    return "\n".join([*_table(header, align, rows), "", source_line(metrics, run, note=_run_note(run))])


def synthetic_recall_table(run: Source, metrics: Source) -> str:
    """Retrieval after stages 1 and 2: recall@10 per pair kind of the stage-1 LM, the stage-2 embedder and the
    embedder stage 2 trains from the LM before stage 1 (the ``no_stage1`` ablation's)."""
    recall = metrics.data["embed"]["recall@10"]
    models = [("stage-1 LM, same last-token pooling", "stage1"), ("stage-2 embedder", "stage2"),
              ("stage 2 started without stage 1", "no_stage1")]
    kinds = [("user–user", "user_user"), ("item–item", "item_item"), ("user–item", "user_item")]
    rows = [[label, *(f"{recall[key][kind]:.3f}" for _, kind in kinds)] for label, key in models if key in recall]
    lines = _table(["recall@10", *(label for label, _ in kinds)], ["---", "---:", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(metrics, run, note=_run_note(run))])


def _run_note(run: Source) -> str:
    setup = run.data
    return f" (`{setup['command']}`, seed {setup['seed']}, {setup['machine']['name']})"


def strict_knowledge_table(default: Source, strict: Source) -> str:
    """Default against ``--strict-knowledge`` data, one quick-settings run each: LARR, ID-only and their gap."""
    rows = []
    for label, metrics in (("default `knowledge.txt` (held-out paraphrases glossed)", default),
                           ("`--strict-knowledge` (no held-out text glossed)", strict)):
        larr, id_only = metrics.data["ctr"]["larr"], metrics.data["ctr"]["id_only"]
        rows.append([label, f"{larr['auc']:.4f}", f"{id_only['auc']:.4f}", _signed(larr["auc"] - id_only["auc"]),
                     f"{larr['logloss']:.4f}"])
    lines = _table(["data (quick settings, one seed)", "LARR test AUC", "ID-only test AUC", "LARR − ID-only",
                    "LARR logloss"], ["---", "---:", "---:", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(default, strict)])


# --------------------------------------------------------------------------------------------- companion methods


def subsequence_table(subseq: Source) -> str:
    """Context sub-sequence selection on the long-history world: each ``ctr.history`` mode's test AUC for LARR and
    ID-only, and its paired Δ over history off (per seed)."""
    data = subseq.data
    settings, events = data["settings"], data["mean_events_read"]
    modes = [
        ("off", "`off`", "0"),
        ("full", "`full` (target attention)", f"{events['full']:.0f}"),
        ("last_k", f"`last_k` (k = {settings['ctr.history_recent']})", f"{events['last_k']:.0f}"),
        ("context", f"`context` ({settings['ctr.prototypes']} prototypes + last {settings['ctr.history_recent']})",
         f"{events['context']:.0f} on average"),
        ("context_shuffled", "control: `context`, another user's events", f"{events['context']:.0f} on average"),
    ]

    def cells(variant: str, mode: str) -> list[str]:
        row = data["rows"][f"{variant}/{mode}"]
        deltas = row["auc_delta_vs_history_off"]
        if not deltas:
            return [_mean_sd(row["test_auc"]), ""]
        per_seed = ", ".join(_signed(deltas[str(seed)], 3) for seed in data["seeds"])
        return [_mean_sd(row["test_auc"]), f"{_signed(row['auc_delta_vs_history_off_stats']['mean'])} ± "
                f"{row['auc_delta_vs_history_off_stats']['std']:.4f} ({per_seed})"]

    rows = [[label, read, *cells("larr", mode), *cells("id_only", mode)] for mode, label, read in modes]
    lines = _table(["`ctr.history`", "events read", "LARR test AUC", "Δ vs off (per seed)", "ID-only test AUC",
                    "Δ vs off (per seed)"], ["---", "---", "---:", "---", "---:", "---"], rows)
    return "\n".join([*lines, "", source_line(subseq)])


def companions_synthetic_table(views: Source, distill: Source, pretrained: Source, subseq: Source) -> str:
    """Every companion option on the synthetic data, quick profile: LARR's test AUC and its paired Δ over the
    baseline ``larr`` run of the same seed (the sub-sequence rows over history off on the long-history data)."""

    def row(label: str, auc: dict, deltas: Sequence[float] | None, delta_stats: dict | None = None) -> list[str]:
        if deltas is None:
            return [label, _mean_sd(auc), "–"]
        stats = delta_stats or {"mean": statistics.fmean(deltas), "std": statistics.stdev(deltas)}
        return [label, _mean_sd(auc), f"{_signed(stats['mean'])} ± {stats['std']:.4f} ({_ahead(deltas)})"]

    base = pretrained.data["test_auc_rows"]
    baseline = base["baseline_larr (tiny from-scratch Llama)"]["test_auc_summary"]
    rows = [row("baseline `larr` (default data)", baseline, None)]
    labels = {"behaviour": "stage-1 behaviour records, 10 per user", "item_views": "stage-2 item name ↔ description pairs, weight 1",
              "persona": "stage-2 explicit-persona pairs, weight 1"}
    for name, option in views.data["options"].items():
        deltas = [seed["delta_auc"] for seed in option["seeds"].values()]
        rows.append(row(labels.get(name, name), option["summary"]["auc"], deltas, option["summary"]["delta_auc"]))
    distilled = [seed["auc_delta_vs_baseline_larr"] for seed in distill.data["seeds"].values()]
    rows.append(row("distilled embedder, half width", distill.data["summary"]["auc_distilled_larr"], distilled,
                    distill.data["summary"]["auc_delta_paired"]))
    minilm = next(r for name, r in base.items() if name.startswith("a_larr_minilm"))
    rows.append(row("pretrained MiniLM base (stages 1/2 shortened)", minilm["test_auc_summary"],
                    list(minilm["paired_delta_vs_baseline_larr"].values()), minilm["paired_delta_summary"]))
    for mode, label in (("off", "history off (long-history data)"), ("full", "full history, target attention"),
                        ("last_k", "last 10 events, target attention"), ("context", "**context sub-sequence**")):
        history = subseq.data["rows"][f"larr/{mode}"]
        deltas = history["auc_delta_vs_history_off"]
        rows.append(row(label, history["test_auc"], list(deltas.values()) if deltas else None,
                        history["auc_delta_vs_history_off_stats"]))
    lines = _table(["option (data)", "test AUC", "paired Δ vs baseline (seeds ahead)"], ["---", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(views, distill, pretrained, subseq)])


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
                     f"{_signed(statistics.fmean(deltas))} ± {statistics.stdev(deltas):.4f} ({_ahead(deltas)})"])
    lines = _table(["option (Frappe)", "test AUC", "paired Δ vs `larr` (seeds ahead)"], ["---", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(baseline, *(results for _, results in options))])


# --------------------------------------------------------------------------------------------- serving


def serving_cpu_table(summary: Source, fastapi: Source) -> str:
    """The serving headline per LLM size: LARR against the full-text baseline and the cache off; Triton against
    FastAPI from ``fastapi``, the run that serves both from the same repository, store and runtime."""
    rows = [[f"{_short_label(size['label'])} ({size['parameters'] / 1e6:,.1f}M)",
             f"{size['throughput_ratio_vs_fulltext']:.2f}×", f"{size['token_bound_vs_fulltext']:.2f}×",
             f"{size['p99_ratio_vs_fulltext']:.2f}", f"{size['throughput_ratio_vs_cache_off']:.2f}×",
             _pct(size["cache_hit_rate"])] for size in summary.data["by_llm_size"].values()]
    lines = _table(["LLM", "LARR / full-text req/s", "token bound", "p99 LARR / full-text", "LARR / cache-off req/s",
                    "cache hit rate"], ["---", "---:", "---:", "---:", "---:", "---:"], rows)
    headline = fastapi.data["headline"]
    size = fastapi.data["by_llm_size"][headline["llm_size"]]
    ratios = " and ".join(f"{r:.2f}×" for r in size["throughput_ratio_vs_fastapi_repeats"])
    p99 = " and ".join(f"{r:.2f}×" for r in size["p99_ratio_vs_fastapi_repeats"])
    line = (f"Triton / FastAPI, both serving the same repository, store and runtime ({headline['label']}, concurrency "
            f"{headline['concurrency']}, {_pct(headline['unseen_share'])} fresh texts, {size['repeats']} repeats): "
            f"**{ratios}** the requests/s, with a p99 {p99} FastAPI's.")
    return "\n".join([*lines, "", line, "", source_line(summary, note=_serving_note(summary)), "",
                      source_line(fastapi, note=_serving_note(fastapi))])


def serving_cpu_sizes_table(summary: Source) -> str:
    """The CPU benchmark's three LLM sizes, every column but Triton / FastAPI (that run's FastAPI ran PyTorch eager
    against Triton's ONNX Runtime)."""
    rows = [[size["label"], f"{size['parameters'] / 1e6:,.1f}M", f"{size['throughput_ratio_vs_fulltext']:.2f}×",
             f"{size['token_bound_vs_fulltext']:.2f}×", f"{size['p99_ratio_vs_fulltext']:.2f}",
             f"{size['throughput_ratio_vs_cache_off']:.2f}×", _pct(size["cache_hit_rate"]),
             f"{size['overhead_us_per_request']:,.0f}", f"{size['embedder_tokens_per_s']:,.0f}", _pct(size["embedder_mfu"])]
            for size in summary.data["by_llm_size"].values()]
    lines = _table(["LLM", "params", "LARR / full-text req/s", "token bound", "p99 LARR / full-text",
                    "LARR / cache-off req/s", "cache hit rate", "serving overhead µs/req", "embedder tokens/s", "MFU"],
                   ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(summary, note=_serving_note(summary))])


def serving_gpu_table(summary: Source, precompute: Source) -> str:
    """One GPU: LARR against the full-text baseline per share of fresh scene texts, the headline share's absolute
    numbers, and the scene-table precompute's throughput and MFU, eager and compiled."""
    headline = summary.data["headline"]
    size = summary.data["by_llm_size"][headline["llm_size"]]
    hit_rates = summary.data["cache_hit_rate_by_unseen_share"][headline["llm_size"]]
    by_share = size["throughput_ratio_vs_fulltext_by_fresh_share"]
    rows = [[_pct(float(share)), f"{ratio:.2f}×", _pct(hit_rates[share])]
            for share, ratio in sorted(by_share.items(), key=lambda item: float(item[0]))]
    lines = _table(["fresh scene texts", "LARR / full-text req/s", "cache hit rate"], ["---:", "---:", "---:"], rows)
    data = summary.data
    at_headline = (f"At {_pct(headline['unseen_share'])} fresh: LARR {data['larr_throughput']:,.1f} req/s, full-text "
                   f"{data['fulltext_throughput']:,.1f}, cache off {data['cache_off_throughput']:,.1f} (LARR / cache off "
                   f"{data['throughput_ratio_vs_cache_off']:.2f}×); token bound {data['token_bound_vs_fulltext']:.2f}×; "
                   f"p99 LARR {data['larr_p99_ms']:.1f} ms, full-text {data['fulltext_p99_ms']:.1f} ms.")
    builds = [precompute.data, precompute.data["compiled"]] if "compiled" in precompute.data else [precompute.data]
    scene_table = "; ".join(f"{'compiled' if b['torch_compile'] else 'eager'} {b['tokens_per_s']:,.0f} tokens/s, "
                            f"MFU {100 * b['mfu']:.1f} %" for b in builds)
    table_line = (f"Scene-table precompute ({precompute.data['precision']}, {precompute.data['texts']:,} texts, peak "
                  f"{precompute.data['peak']}): {scene_table}.")
    return "\n".join([*lines, "", at_headline, table_line, "",
                      source_line(summary, precompute, note=_serving_note(summary))])


def _short_label(label: str) -> str:
    """'trained tiny LLM (the run's checkpoints)' -> 'trained tiny LLM'; 'SmolLM-135M shape, random weights' ->
    'SmolLM-135M shape'."""
    return label.split(",")[0].split(" (")[0]


def _serving_note(summary: Source) -> str:
    headline, machine = summary.data["headline"], summary.data.get("hardware") or {"name": summary.data["machine"]}
    return (f" (concurrency {headline['concurrency']}, {_pct(headline['unseen_share'])} fresh texts; {machine['name']}; "
            f"started {summary.data['started']})")


# --------------------------------------------------------------------------------------------- soak


def soak_table(soak: Source) -> str:
    """`larr soak`'s verdict: requests, errors, throughput, latency, RSS growth and stub reloads over the run."""
    config, totals, rss = soak.data["config"], soak.data["totals"], soak.data["rss"]
    mib = 1024 * 1024
    loads = [w["load_1min"] for w in soak.data["windows"] if w.get("load_1min") is not None]
    load = f"{min(loads):.1f}–{max(loads):.1f} (mean {statistics.fmean(loads):.1f})" if loads else "–"
    row = [f"{totals['requests']:,} in {totals['seconds']:,.0f} s", f"**{totals['error_count']:,}**",
           f"{totals['throughput']:,.1f}", f"{totals['p50_ms']:.1f} ms", f"{totals['p99_ms']:.1f} ms",
           f"{rss['baseline_bytes'] / mib:.1f} → {rss['peak_bytes'] / mib:.1f} MiB ({_signed(100 * rss['growth'], 1)} %, "
           f"bound {100 * config['max_rss_growth']:.0f} %)", str(sum(totals["stub_restarts"].values())),
           "passed" if soak.data["passed"] else "failed: " + "; ".join(soak.data["failures"]), load]
    lines = _table(["requests", "errors", "req/s", "p50", "p99", "RSS after warm-up → peak (growth)", "stub reloads",
                    "verdict", "machine load (1 min)"], ["---:", "---:", "---:", "---:", "---:", "---:", "---:", "---",
                                                         "---:"], [row])
    machine = soak.data["machine"]
    note = (f" (`{soak.data['command']}`: concurrency {config['concurrency']}, {_pct(config['fresh_share'])} fresh scene "
            f"texts, {config['candidates']} candidates; {machine['name']}: {machine['cpu_model']}, {machine['cores']} cores)")
    return "\n".join([*lines, "", source_line(soak, note=note)])


# --------------------------------------------------------------------------------------------- demo timings


def demo_timings_table(timings: Source) -> str:
    """`larr demo`'s wall time per step, the first served answer and the total (the demo alone: no set-up)."""
    steps = timings.data["step_seconds"]
    names = [n for n in DEMO_STEPS if n in steps] + [n for n in steps if n not in DEMO_STEPS]
    rows = [[name, _minutes(steps[name])] for name in names]
    rows.append(["**first served answer** (since the start)", f"**{_minutes(timings.data['first_answer_seconds'])}**"])
    rows.append(["**total**", f"**{_minutes(timings.data['total_seconds'])}**"])
    lines = _table(["`larr demo` step", "wall time"], ["---", "---:"], rows)
    machine = timings.data["machine"]
    note = (f" (`{timings.data['command']}`; {machine['name']}: {machine['cpu_model']}, {machine['cores']} cores; "
            f"load average {timings.data['load_average_start']:.1f} at the start, "
            f"{timings.data['load_average_end']:.1f} at the end; started {timings.data['started']})")
    return "\n".join([*lines, "", source_line(timings, note=note)])


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


# --------------------------------------------------------------------------------------------- the registry


def _replication(root: Path) -> str:
    summary = read_source(root, REPLICATION_SUMMARY)
    groups = [read_source(root, f"{FINALMLP}/replicate-llm{g['llm_seed']}/results.json") for g in summary.data["llm_seeds"]]
    return frappe_finalmlp_table(summary, groups)


def _synthetic(root: Path) -> tuple[Source, Source]:
    return read_source(root, f"{SYNTHETIC_ABLATION}/run.json"), read_source(root, f"{SYNTHETIC_ABLATION}/metrics.json")


def _companions_frappe(root: Path) -> str:
    options = [("stage-2 item name ↔ description pairs, weight 1", "item-views"),
               ("distilled embedder, half width", "distilled"), ("stage-1 behaviour records, 10 per user", "behaviour")]
    return companions_frappe_table(read_source(root, f"{FINALMLP}/larr/results.json"),
                                   [(label, read_source(root, f"{FINALMLP}/{folder}/results.json")) for label, folder in options])


TABLES: dict[str, Callable[[Path], str]] = {  # name -> function(repository root) -> markdown
    "frappe-finalmlp": _replication,
    "frappe-finalmlp-groups": lambda root: replication_groups_table(read_source(root, REPLICATION_SUMMARY)),
    "frappe-finalmlp-id-only": lambda root: finalmlp_id_only_table(read_source(root, f"{FINALMLP}/results.json")),
    "frappe-deepfm": lambda root: frappe_deepfm_table(read_source(root, f"{FRAPPE}/results.json"),
                                                      read_source(root, f"{FINALMLP}/results.json")),
    "synthetic-ablation": lambda root: synthetic_ablation_table(*_synthetic(root)),
    "synthetic-ablation-full": lambda root: synthetic_ablation_table(*_synthetic(root), full=True),
    "synthetic-recall": lambda root: synthetic_recall_table(*_synthetic(root)),
    "synthetic-strict-knowledge": lambda root: strict_knowledge_table(
        read_source(root, f"{STRICT_KNOWLEDGE}/default.metrics.json"), read_source(root, f"{STRICT_KNOWLEDGE}/strict.metrics.json")),
    "companion-subsequence": lambda root: subsequence_table(read_source(root, f"{COMPANIONS}/subseq.json")),
    "companions-synthetic": lambda root: companions_synthetic_table(
        read_source(root, f"{COMPANIONS}/views.json"), read_source(root, f"{COMPANIONS}/distill.json"),
        read_source(root, PRETRAINED_BASE), read_source(root, f"{COMPANIONS}/subseq.json")),
    "companions-frappe": _companions_frappe,
    "serving-cpu": lambda root: serving_cpu_table(read_source(root, SERVING_CPU), read_source(root, SERVING_CPU_FASTAPI)),
    "serving-cpu-sizes": lambda root: serving_cpu_sizes_table(read_source(root, SERVING_CPU)),
    "serving-gpu-h200": lambda root: serving_gpu_table(
        read_source(root, f"{SERVING_GPU}/summary.json"), read_source(root, f"{SERVING_GPU}/precompute.json")),
    "soak": lambda root: soak_table(read_source(root, SOAK)),
    "demo-timings": lambda root: demo_timings_table(read_source(root, DEMO_TIMINGS)),
}
