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

# Results files, relative to the repository root.
FRAPPE_FINALMLP_SUMMARY = "benchmarks/studies/frappe/results/frappe-finalmlp/replicate-llm-seeds/summary.json"
SYNTHETIC_ABLATION_RUN = "benchmarks/results/synth-ablation-tiny/run.json"
SYNTHETIC_ABLATION_METRICS = "benchmarks/results/synth-ablation-tiny/metrics.json"
SERVING_CPU_SUMMARY = "benchmarks/results/cpu-2core-amd-epyc/summary.json"
SOAK_RESULT = "benchmarks/results/soak-cpu-2core/soak.json"
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


def source_line(*sources: Source, note: str = "") -> str:
    """The table's last line: the files it was rendered from and the commit they ran at (from the first that
    records one)."""
    files = " and ".join(f"`{s.path}`" for s in sources)
    recorded = [s for s in sources if s.data.get("code_commit") or s.data.get("results_commit")]
    commit = (recorded[0] if recorded else sources[0]).commit_phrase()
    return f"<sub>Rendered by `larr docs render` from {files}, {commit}{note}.</sub>"


def _short(commit: str) -> str:
    head, dirty, _ = commit.partition("-dirty")
    return head[:SHORT_COMMIT] + ("-dirty" if dirty else "")


def _table(header: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table; ``align`` holds '---' (left) or '---:' (right) per column."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def _signed(value: float, digits: int = 4) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


# --------------------------------------------------------------------------------------------- Frappe, FinalMLP


def frappe_finalmlp_table(summary: Source) -> str:
    """LARR on FinalMLP and our ID-only FinalMLP over the replication's groups (one stages-1/2 seed, several
    stage-3 seeds each): mean ± sd over every run, the 95 % t-interval of the mean over the per-group means, the
    paired gap LARR − ID-only (the same stage-3 seed pairs the two runs), and BARS's single published FinalMLP."""
    groups = summary.data["llm_seeds"]
    larr = [auc for g in groups for auc in g["larr_auc"]]
    gaps = [gap for g in groups for gap in g["gaps"]]
    id_only = [auc - gap for g in groups for auc, gap in zip(g["larr_auc"], g["gaps"])]
    per_group = {
        "larr": [statistics.fmean(g["larr_auc"]) for g in groups],
        "id_only": [statistics.fmean([a - d for a, d in zip(g["larr_auc"], g["gaps"])]) for g in groups],
        "gap": [statistics.fmean(g["gaps"]) for g in groups],
    }
    _check_stored(summary, "gap_mean", statistics.fmean(per_group["gap"]))
    _check_stored(summary, "gap_ci95", mean_ci95(per_group["gap"])[1])
    _check_stored(summary, "larr_mean", statistics.fmean(larr))
    seeds_per_group = sorted({len(g["larr_auc"]) for g in groups})
    runs = f"{len(larr)} ({len(groups)} stages-1/2 seeds × {'/'.join(map(str, seeds_per_group))} stage-3 seeds)"

    def interval(values: list[float], signed: bool = False) -> str:
        mean, half = mean_ci95(values)
        show = _signed if signed else (lambda v: f"{v:.4f}")
        return f"[{show(mean - half)}, {show(mean + half)}]"

    rows = [
        ["LARR on FinalMLP", f"{statistics.fmean(larr):.4f} ± {statistics.stdev(larr):.4f}",
         interval(per_group["larr"]), runs],
        ["our ID-only FinalMLP", f"{statistics.fmean(id_only):.4f} ± {statistics.stdev(id_only):.4f}",
         interval(per_group["id_only"]), "the same seeds"],
        ["**paired gap, LARR − ID-only**", f"**{_signed(statistics.fmean(per_group['gap']))}** ± "
         f"{statistics.stdev(gaps):.4f}", f"**{interval(per_group['gap'], signed=True)}**",
         f"ahead in {sum(gap > 0 for gap in gaps)} of {len(gaps)} pairs"],
        ["BARS FinalMLP (published)", f"{summary.data['target']:.4f}", "–", "one run, BARS's own train file"],
    ]
    lines = _table(
        ["Frappe_x1 test AUC", "mean ± sd over runs", f"95 % interval of the mean (t, over the {len(groups)} groups)",
         "runs"],
        ["---", "---:", "---:", "---"], rows)
    return "\n".join([*lines, "", source_line(summary)])


def _check_stored(source: Source, key: str, computed: float | None) -> None:
    """A summary's stored figure must be what its own per-run values give (else the file is inconsistent)."""
    stored = source.data.get(key)
    if stored is not None and computed is not None and not math.isclose(stored, computed, rel_tol=0, abs_tol=1e-9):
        raise ResultsError(f"{source.path}: {key} is {stored}, but its per-run values give {computed}")


# --------------------------------------------------------------------------------------------- synthetic ablation


def synthetic_ablation_table(run: Source, metrics: Source) -> str:
    """Stage 3's variants on the synthetic test split, one seed: LARR, the ID-only baseline and the ablations."""
    ctr = {name: result for name, result in metrics.data["ctr"].items() if isinstance(result, dict)}
    if "id_only" not in ctr:
        raise ResultsError(f"{metrics.path}: no id_only variant to measure the others against")
    names = [n for n in ABLATION_ORDER if n in ctr] + sorted(n for n in ctr if n not in ABLATION_ORDER)
    baseline = ctr["id_only"]["auc"]

    def delta(name: str) -> str:
        text = "0" if name == "id_only" else _signed(ctr[name]["auc"] - baseline)
        return f"**{text}**" if name == "larr" else text

    rows = [[f"`{n}`", f"{ctr[n]['auc']:.4f}", delta(n), f"{ctr[n]['logloss']:.4f}", f"{ctr[n]['gauc']:.4f}",
             f"{ctr[n]['best_valid_auc']:.4f}"] for n in names]
    lines = _table(["variant", "test AUC", "Δ AUC vs `id_only`", "logloss", "GAUC", "valid AUC"],
                   ["---", "---:", "---:", "---:", "---:", "---:"], rows)
    setup = run.data
    note = f" (`{setup['command']}`, seed {setup['seed']}, {setup['machine']['name']})"
    return "\n".join([*lines, "", source_line(metrics, run, note=note)])


# --------------------------------------------------------------------------------------------- serving, CPU


def serving_cpu_table(summary: Source) -> str:
    """The serving benchmark's headline per LLM size: LARR vs the full-text baseline, the cache off and FastAPI."""
    sizes = summary.data["by_llm_size"]
    rows = []
    for size in sizes.values():
        rows.append([
            size["label"],
            f"{size['parameters'] / 1e6:,.1f}M",
            f"{size['throughput_ratio_vs_fulltext']:.2f}×",
            f"{size['token_bound_vs_fulltext']:.2f}×",
            f"{size['p99_ratio_vs_fulltext']:.2f}",
            f"{size['throughput_ratio_vs_cache_off']:.2f}×",
            f"{size['cache_hit_rate']:.0%}",
            f"{size['throughput_ratio_vs_fastapi']:.1f}×",
            f"{size['embedder_mfu']:.0%}",
        ])
    lines = _table(["LLM", "parameters", "LARR / full-text req/s", "token bound", "p99 LARR / full-text",
                    "LARR / cache off", "cache hit rate", "Triton / FastAPI req/s", "MFU"],
                   ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"], rows)
    headline, hardware = summary.data["headline"], summary.data["hardware"]
    note = (f" (concurrency {headline['concurrency']}, {headline['unseen_share']:.0%} never-seen scene texts; "
            f"{hardware['name']}: {hardware['cpu_model']}, {hardware['cores']} cores; started {summary.data['started']})")
    return "\n".join([*lines, "", source_line(summary, note=note)])


# --------------------------------------------------------------------------------------------- soak


def soak_table(soak: Source) -> str:
    """`larr soak`'s verdict: errors, throughput, latency and RSS growth over the whole run."""
    config, totals, rss = soak.data["config"], soak.data["totals"], soak.data["rss"]
    mib = 1024 * 1024
    restarts = sum(totals["stub_restarts"].values())
    rows = [
        ["duration, concurrency", f"{totals['seconds']:,.0f} s, {config['concurrency']} clients, "
                                  f"{config['fresh_share']:.0%} fresh scene texts, {config['candidates']} candidates"],
        ["requests, errors", f"{totals['requests']:,}, **{totals['error_count']:,} errors**"],
        ["throughput", f"{totals['throughput']:,.1f} req/s"],
        ["latency p50 / p99", f"{totals['p50_ms']:.1f} / {totals['p99_ms']:.1f} ms"],
        ["stub restarts", f"{restarts}"],
        ["RSS after warm-up → peak (growth, bound)",
         f"{rss['baseline_bytes'] / mib:.1f} → {rss['peak_bytes'] / mib:.1f} MiB "
         f"({_signed(100 * rss['growth'], 1)} %, bound {100 * config['max_rss_growth']:.0f} %)"],
        ["verdict", "**passed**" if soak.data["passed"] else "**failed**: " + "; ".join(soak.data["failures"])],
    ]
    lines = _table(["`larr soak`", "result"], ["---", "---"], rows)
    machine = soak.data["machine"]
    note = f" (`{soak.data['command']}`; {machine['name']}: {machine['cpu_model']}, {machine['cores']} cores)"
    return "\n".join([*lines, "", source_line(soak, note=note)])


# --------------------------------------------------------------------------------------------- demo timings


def demo_timings_table(timings: Source) -> str:
    """`larr demo`'s wall time per step, the first served answer and the total."""
    steps = timings.data["step_seconds"]
    names = [n for n in DEMO_STEPS if n in steps] + [n for n in steps if n not in DEMO_STEPS]
    rows = [[name, _minutes(steps[name])] for name in names]
    rows.append(["**first served answer** (since the start)", f"**{_minutes(timings.data['first_answer_seconds'])}**"])
    rows.append(["**total**", f"**{_minutes(timings.data['total_seconds'])}**"])
    lines = _table(["`larr demo` step", "wall time"], ["---", "---:"], rows)
    machine = timings.data["machine"]
    note = (f" (`{timings.data['command']}`; {machine['name']}: {machine['cpu_model']}, {machine['cores']} cores; "
            f"load average {timings.data['load_average_start']:.1f} at the start; started {timings.data['started']})")
    return "\n".join([*lines, "", source_line(timings, note=note)])


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


# --------------------------------------------------------------------------------------------- the registry


TABLES: dict[str, Callable[[Path], str]] = {  # name -> function(repository root) -> markdown
    "frappe-finalmlp": lambda root: frappe_finalmlp_table(read_source(root, FRAPPE_FINALMLP_SUMMARY)),
    "synthetic-ablation": lambda root: synthetic_ablation_table(
        read_source(root, SYNTHETIC_ABLATION_RUN), read_source(root, SYNTHETIC_ABLATION_METRICS)),
    "serving-cpu": lambda root: serving_cpu_table(read_source(root, SERVING_CPU_SUMMARY)),
    "soak": lambda root: soak_table(read_source(root, SOAK_RESULT)),
    "demo-timings": lambda root: demo_timings_table(read_source(root, DEMO_TIMINGS)),
}
