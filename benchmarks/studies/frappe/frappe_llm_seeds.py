"""LARR over several stages-1/2 seeds on Frappe: the pre-registered plan's two-level summary (issue 15).

Each ``frappe_bars`` results file holds one stages-1/2 seed (``setup.llm_seed``) and stage-3 seeds paired with
the ID-only model (same seed: same batch order). The LARR − ID-only gap varies at two levels: between stage-3
seeds, and between the LLMs that stages 1-2 trained. Averaging a gap over the stage-3 seeds of one LLM and taking
the interval over those per-LLM means counts both; an interval over stage-3 seeds of one LLM counts only the
first, so it is reported beside but never as the verdict::

    python benchmarks/studies/frappe/frappe_llm_seeds.py benchmarks/studies/frappe/results/frappe-finalmlp/larr/results.json [more ...] \\
        --out benchmarks/studies/frappe/results/frappe-finalmlp/llm-seeds

One stages-1/2 seed's stage-3 runs may come in several files (a plan finished from another run folder or
machine): they are merged when their configs agree and no stage-3 seed is in two of them. ``--id-only FILE`` pairs
every LARR run with FILE's ID-only runs (a plan's part A) rather than the ID-only runs each file holds.
``--against FILE ...`` pairs every LARR run with the LARR run of the same stages-1/2 and stage-3 seeds in those
files instead (another LARR option: the gap of one option over the other, counted the same two-level way)::

    python benchmarks/studies/frappe/frappe_llm_seeds.py benchmarks/studies/frappe/results/frappe-finalmlp/behaviour-llm20*/results.json \
        --against benchmarks/studies/frappe/results/frappe-finalmlp/larr*/results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from frappe_bars import BEST_BARS

from larr.benchmarks.summary import mean_ci95
from larr.layout import Variant


@dataclass(frozen=True)
class LlmSeedGap:
    """One stages-1/2 seed: its LARR runs and their paired gaps over the ID-only runs of the same stage-3 seeds."""

    llm_seed: int
    stage3_seeds: list[int]
    larr_auc: list[float]  # per stage-3 seed, in stage3_seeds' order
    gaps: list[float]  # LARR − ID-only test AUC, same order

    @property
    def mean_gap(self) -> float:
        return statistics.fmean(self.gaps)


@dataclass(frozen=True)
class TwoLevelSummary:
    llm_seeds: list[LlmSeedGap]
    larr_mean: float  # over every LARR run
    larr_std: float | None
    gap_mean: float  # mean of the per-LLM-seed mean gaps
    gap_ci95: float | None  # t-interval over the per-LLM-seed means (df = LLM seeds − 1); None for one LLM seed
    stage3_only_ci95: float | None  # t-interval over all paired gaps as if independent: stage-3 variance only
    target: float  # the board's best test AUC

    @property
    def goal_met(self) -> bool:
        """LARR's mean above the board's best, and the gap's interval (counting LLM seeds) above 0."""
        return self.larr_mean > self.target and self.gap_ci95 is not None and self.gap_mean - self.gap_ci95 > 0


def _read(results_file: Path) -> dict:
    return json.loads(results_file.read_text(encoding="utf-8"))


def _paired_runs(report: dict, results_file: Path) -> tuple[dict, dict]:
    """(LARR, ID-only) per-seed results of one ``frappe_bars`` report, keyed by stage-3 seed (str)."""
    per_seed = report["per_seed"]
    missing = [v.value for v in (Variant.LARR, Variant.ID_ONLY) if v.value not in per_seed]
    if missing:
        raise ValueError(f"{results_file}: no {missing} runs; it needs both LARR and ID-only")
    return per_seed[Variant.LARR.value], per_seed[Variant.ID_ONLY.value]


def read_id_only(results_file: Path) -> dict[str, dict]:
    """The ID-only runs of a ``frappe_bars`` results file (e.g. a plan's part A), keyed by stage-3 seed (str)."""
    per_seed = _read(results_file)["per_seed"]
    if Variant.ID_ONLY.value not in per_seed:
        raise ValueError(f"{results_file}: no {Variant.ID_ONLY.value} runs")
    return per_seed[Variant.ID_ONLY.value]


def read_llm_seed(*results_files: Path, baseline: dict[str, dict] | None = None) -> LlmSeedGap:
    """The paired LARR and ID-only runs of one stages-1/2 seed, from one or more ``frappe_bars`` results files.

    Several files must name the same stages-1/2 seed and the same config (``setup.config``), and no stage-3 seed
    may be in two of them: a repeated run would count twice, and a changed config is another option. ``baseline``
    (runs keyed by stage-3 seed: another file's ID-only runs, :func:`read_id_only`, or another option's LARR runs,
    :func:`read_larr_runs`) pairs every LARR run with these instead of its own file's ID-only runs.
    """
    return _llm_seed_gap([(path, _read(path)) for path in results_files], baseline)


def _llm_seed_gap(files: list[tuple[Path, dict]], baseline: dict[str, dict] | None) -> LlmSeedGap:
    """:func:`read_llm_seed` over files already read: (path, report) pairs."""
    llm_seed, larr, base = _merged_runs(files)
    if baseline is not None:
        base = baseline
    seeds = sorted(set(larr) & set(base), key=int)
    if not seeds:
        names = ", ".join(str(path) for path, _ in files)
        raise ValueError(f"{names}: no stage-3 seed has both a LARR run and one to pair it with")
    return LlmSeedGap(
        llm_seed=llm_seed,
        stage3_seeds=[int(s) for s in seeds],
        larr_auc=[larr[s]["auc"] for s in seeds],
        gaps=[larr[s]["auc"] - base[s]["auc"] for s in seeds],
    )


def _merged_runs(files: list[tuple[Path, dict]]) -> tuple[int, dict[str, dict], dict[str, dict]]:
    """(stages-1/2 seed, LARR runs, ID-only runs) of one stages-1/2 seed's (path, report) pairs, runs keyed by
    stage-3 seed."""
    larr: dict[str, dict] = {}
    base: dict[str, dict] = {}
    setups = [report["setup"] for _, report in files]
    names = ", ".join(str(path) for path, _ in files)
    if len({s["llm_seed"] for s in setups}) != 1:
        raise ValueError(f"{names}: different stages-1/2 seeds {[s['llm_seed'] for s in setups]}")
    if any(s.get("config") != setups[0].get("config") for s in setups[1:]):
        raise ValueError(f"{names}: the configs differ; merge only runs of one option")
    for path, report in files:
        file_larr, file_base = _paired_runs(report, path)
        repeated = sorted((set(file_larr) | set(file_base)) & (set(larr) | set(base)), key=int)
        if repeated:
            raise ValueError(f"{path}: stage-3 seed(s) {repeated} repeat a run of another file; give each once")
        larr.update(file_larr)
        base.update(file_base)
    return int(setups[0]["llm_seed"]), larr, base


def _by_llm_seed(results_files: list[Path]) -> dict[int, list[tuple[Path, dict]]]:
    """The files, each read once, grouped by their stages-1/2 seed: seed -> [(path, report), ...]."""
    by_seed: dict[int, list[tuple[Path, dict]]] = defaultdict(list)
    for path in results_files:
        report = _read(path)
        by_seed[int(report["setup"]["llm_seed"])].append((path, report))
    return by_seed


def read_larr_runs(results_files: list[Path]) -> dict[int, dict[str, dict]]:
    """Another option's LARR runs, keyed by stages-1/2 seed, then stage-3 seed (merged as :func:`read_llm_seed`)."""
    return {seed: _merged_runs(files)[1] for seed, files in _by_llm_seed(results_files).items()}


def read_llm_seeds(
    results_files: list[Path], id_only: dict[str, dict] | None = None, against: dict[int, dict[str, dict]] | None = None
) -> list[LlmSeedGap]:
    """One :class:`LlmSeedGap` per stages-1/2 seed, merging the files that share one (:func:`read_llm_seed`).

    ``against`` (:func:`read_larr_runs`): pair each run with that option's LARR run of the same stages-1/2 and
    stage-3 seeds instead of an ID-only run; every stages-1/2 seed here must be there."""
    if id_only is not None and against is not None:
        raise ValueError("pair with ID-only runs or with another option's LARR runs, not both")
    groups = []
    for seed, files in _by_llm_seed(results_files).items():
        if against is not None and seed not in against:
            raise ValueError(f"stages-1/2 seed {seed}: no LARR runs of it to pair with (--against has {sorted(against)})")
        groups.append(_llm_seed_gap(files, against[seed] if against is not None else id_only))
    return groups


def summarise(groups: list[LlmSeedGap], target: float = BEST_BARS[1]) -> TwoLevelSummary:
    llm_seeds = [g.llm_seed for g in groups]
    if len(set(llm_seeds)) != len(llm_seeds):
        raise ValueError(f"stages-1/2 seeds repeat: {llm_seeds}; merge their files with read_llm_seeds")
    groups = sorted(groups, key=lambda g: g.llm_seed)  # the table in seed order, whatever order the files came in
    runs = [auc for g in groups for auc in g.larr_auc]
    gap_mean, gap_ci95 = mean_ci95([g.mean_gap for g in groups])
    _, stage3_only = mean_ci95([gap for g in groups for gap in g.gaps])
    return TwoLevelSummary(
        llm_seeds=groups,
        larr_mean=statistics.fmean(runs),
        larr_std=statistics.stdev(runs) if len(runs) > 1 else None,
        gap_mean=gap_mean,
        gap_ci95=gap_ci95,
        stage3_only_ci95=stage3_only,
        target=target,
    )


def render_markdown(summary: TwoLevelSummary, id_only_source: Path | None = None,
                    against_sources: list[Path] | None = None) -> str:
    runs = sum(len(g.gaps) for g in summary.llm_seeds)
    baseline = "the other option" if against_sources else "ID-only"
    lines = [
        f"# LARR over {len(summary.llm_seeds)} stages-1/2 seed(s), {runs} paired runs",
        "",
        f"| stages-1/2 seed | stage-3 seeds | LARR test AUC (mean) | paired gap over {baseline} (mean) | ahead |",
        "|---:|---|---:|---:|---:|",
    ]
    for g in summary.llm_seeds:
        ahead = sum(d > 0 for d in g.gaps)
        lines.append(f"| {g.llm_seed} | {', '.join(map(str, g.stage3_seeds))} | {statistics.fmean(g.larr_auc):.4f} "
                     f"| {g.mean_gap:+.4f} | {ahead} of {len(g.gaps)} |")
    std = "" if summary.larr_std is None else f" ± {summary.larr_std:.4f} (std over runs)"
    lines += ["", f"- LARR mean test AUC {summary.larr_mean:.4f}{std}; the board's best {summary.target:.4f}."]
    if summary.gap_ci95 is None:
        lines.append(f"- Paired gap {summary.gap_mean:+.4f}: **no interval that counts the LLM stages yet** (one "
                     "stages-1/2 seed; the plan needs its three).")
    else:
        low, high = summary.gap_mean - summary.gap_ci95, summary.gap_mean + summary.gap_ci95
        lines.append(f"- Paired gap {summary.gap_mean:+.4f}, 95 % interval over the stages-1/2 seeds "
                     f"[{low:+.4f}, {high:+.4f}].")
    if summary.stage3_only_ci95 is not None:
        lines.append(f"- For comparison only, the interval over stage-3 seeds alone (LLM-stage variance not counted): "
                     f"±{summary.stage3_only_ci95:.4f}.")
    if against_sources:
        lines.append("- The gap is over another LARR option: every run is paired with the LARR run of the same "
                     f"stages-1/2 and stage-3 seeds in {', '.join(f'`{p}`' for p in against_sources)}.")
    if id_only_source is not None:
        lines.append(f"- Every LARR run is paired with the ID-only run of its stage-3 seed in `{id_only_source}`, not with "
                     "the ID-only runs of its own results file.")
    lines.append(f"- Goal (LARR mean > {summary.target:.4f} and the counted interval above 0): "
                 f"**{'met' if summary.goal_met else 'not met'}**.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/studies/frappe/frappe_llm_seeds.py", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path,
                        help="frappe_bars results.json files (several for one stages-1/2 seed are merged)")
    parser.add_argument("--id-only", type=Path, help="pair every LARR run with this results file's ID-only runs (e.g. "
                        "a plan's part A) instead of the ID-only runs in its own file")
    parser.add_argument("--against", type=Path, nargs="+", help="pair every LARR run with the LARR run of the same "
                        "stages-1/2 and stage-3 seeds in these results files (another option) instead of ID-only")
    parser.add_argument("--out", type=Path, help="write OUT/summary.json and OUT/summary.md (default: print only)")
    args = parser.parse_args(argv)
    if args.id_only is not None and args.against:
        parser.error("--id-only and --against exclude each other")
    summary = summarise(read_llm_seeds(args.results, None if args.id_only is None else read_id_only(args.id_only),
                                       None if not args.against else read_larr_runs(args.against)))
    text = render_markdown(summary, args.id_only, args.against)
    print(text, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        data = {**asdict(summary), "goal_met": summary.goal_met, "sources": [str(p) for p in args.results],
                "id_only_source": None if args.id_only is None else str(args.id_only),
                "against_sources": [str(p) for p in args.against or []]}
        (args.out / "summary.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (args.out / "summary.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
