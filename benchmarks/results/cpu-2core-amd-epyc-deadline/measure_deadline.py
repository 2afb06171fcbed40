"""fresh_text_policy ``deadline`` at several D, measured with larr bench's own code (issue 35's CPU line).

    python benchmarks/results/cpu-2core-amd-epyc-deadline/measure_deadline.py \
        --checkpoints /work/tiny/run --deadlines 50,150,400 --repeats 2 --out benchmarks/results/cpu-2core-amd-epyc-deadline

`larr bench --fresh-text-policy deadline --miss-deadline-ms D` measures one D per run and, per repeat, also the
cache-off and full-text baselines at two concurrency levels (a fresh server each; ~1 min per server at this size on
2 cores). This script keeps to the points the Done-when line needs and uses the harness's own pieces for them
(``BenchRun._triton_sweep``: fresh server, the same 32-request warm-up, perf_analyzer, Triton's statistics and the
feature cache's counters; ``prepare_size``: the export with the scene table; ``write_report``: summary.json): per
repeat one LARR server at 0 % fresh texts (no misses, so D plays no part), then one fresh LARR server per D at 10 %
fresh, all at concurrency 16 on the same request stream (seed + repeat), the order of the D reversed every other
repeat so a drift in machine load does not line up with D. Outputs: results.json (every point, each tagged
``miss_deadline_ms`` and the load average before it), ``d<D>/`` (the harness's results.json, summary.json and
tables for that D with the 0 % points), deadline.json (the curve and the Done-when check).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from larr.benchmarks.config import LARR, LLM_SHAPES, PROFILES, SMOLLM_135M, profile
from larr.benchmarks.models import display_path, prepare_size
from larr.benchmarks.runner import (
    RESULTS_FILE,
    BenchRun,
    Progress,
    SizeResult,
    _config_json,
    _precompute,
    _versions,
    segment_key,
)
from larr.benchmarks.summary import mean_ci95
from larr.export.fresh_text_policy import apply_fresh_text_policy

BOUND_FACTOR = 1.2  # issue 35: p99 at 10 % fresh <= 1.2 x the 0 %-fresh p99 + D


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-deadline"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--llm-size", default=SMOLLM_135M, choices=sorted(LLM_SHAPES))
    parser.add_argument("--deadlines", default="50,150,400", help="D in ms, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fresh-share", type=float, default=0.1)
    parser.add_argument("--target-seconds", type=float, help="default: the store profile's grid")
    parser.add_argument("--prepare-only", action="store_true", help="export the models (and scene table), measure nothing")
    args = parser.parse_args(argv)
    deadlines = [float(d) for d in args.deadlines.split(",") if d.strip()]
    share, concurrency = args.fresh_share, args.concurrency

    base = PROFILES["store"]
    grid = base.grids[SMOLLM_135M]
    grid = replace(grid, concurrency=tuple(sorted({1, concurrency})), baseline_concurrency=(concurrency,),
                   share_concurrency=(concurrency,), loadgen_concurrency=(concurrency,), unseen_shares=(0.0, share),
                   **({"target_seconds": args.target_seconds} if args.target_seconds else {}))
    config = profile(
        "store", checkpoints=args.checkpoints, out=args.out, work=args.work, llm_sizes=(args.llm_size,),
        headline_size=args.llm_size, grids={args.llm_size: grid}, headline_concurrency=concurrency,
        headline_unseen=share, fresh_text_policy="deadline", miss_deadline_ms=deadlines[0], repeats=args.repeats,
        skip=("fastapi", "inprocess", "saturation"),
    )
    bench = BenchRun(config)
    tasks = {"gemm": 5.0, "setup": 60.0}
    for repeat in range(args.repeats):
        tasks[f"r{repeat}/0"] = 60.0
        tasks.update({f"r{repeat}/D{d:g}": 60.0 for d in deadlines})
    bench.progress = Progress(tasks, bench.echo)
    started = time.time()
    from larr.benchmarks.inprocess import gemm_peak

    bench.progress.task("gemm", "fp32 GEMM peak")
    peak = gemm_peak(bench.machine.device, config.gemm_size)
    bench.progress.finish("gemm")
    shape = LLM_SHAPES[args.llm_size]
    bench.progress.task("setup", f"{args.llm_size}: models and repositories ({shape.label})")
    models = prepare_size(
        shape, bench.base, bench.work, device=bench.machine.device, runtime=config.runtime,
        cache_capacity=config.cache_capacity, embedder_precision=config.embedder_precision,
        embedder_width_ratio=config.embedder_width_ratio, max_candidates=max(1000, config.candidates),
        fulltext_max_length=config.fulltext_max_length, seed=config.seed, rebuild=config.rebuild,
        progress=bench.progress.note,
    )
    bench.progress.finish("setup")
    if args.prepare_only:
        return 0
    repository = models.repositories[LARR]
    result = SizeResult(
        llm_size=args.llm_size, label=shape.label, labels=models.labels, parameters=models.parameters.total,
        non_embedding_parameters=models.parameters.non_embedding, precompute=_precompute(repository),
    )

    def sweep(repeat: int, point_share: float, deadline_ms: float, task: str) -> None:
        apply_fresh_text_policy(repository, "deadline", miss_deadline_ms=deadline_ms)
        load = os.getloadavg()
        first = len(result.points)
        bench._triton_sweep(models, result, LARR, point_share, (concurrency,), repeat, task)
        for point in result.points[first:]:
            point.miss_deadline_ms = deadline_ms  # to_json() writes it with the point
            point.loadavg_before = list(load)
            point.loadavg_after = list(os.getloadavg())
            cache = point.cache or {}
            bench.progress.note(f"D={deadline_ms:g} ms, fresh {point_share:.0%}: p50 {point.p50_us / 1e3:.1f} ms, own "
                                f"embedding {cache.get('own_embedding_share')}, load {load[0]:.2f}")
        key = segment_key(repeat, LARR, point_share)
        result.segments[f"{key}/D{deadline_ms:g}"] = result.segments.pop(key)

    for repeat in range(args.repeats):
        order = deadlines if repeat % 2 == 0 else deadlines[::-1]
        sweep(repeat, 0.0, order[0], f"r{repeat}/0")
        for deadline_ms in order:
            sweep(repeat, share, deadline_ms, f"r{repeat}/D{deadline_ms:g}")

    document = {
        "machine": bench.machine.to_json(),
        "config": {**_config_json(config), "miss_deadlines_ms": deadlines},
        "command": shlex.join([sys.executable, *sys.argv]),
        "checkpoints": display_path(bench.base.checkpoints),
        "dataset": display_path(bench.base.data_dir),
        "gemm_peak": peak.to_json(),
        "sizes": [result.to_json()],
        "long_run": {},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started,
        "versions": _versions(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_FILE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    write_per_deadline(document, out, deadlines, share)
    curve = deadline_curve(document, deadlines, share, concurrency)
    (out / "deadline.json").write_text(json.dumps(curve, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(curve["by_deadline_ms"], indent=1))
    return 0


def write_per_deadline(document: dict, out: Path, deadlines: list[float], share: float) -> None:
    """``d<D>/``: the harness's summary.json, CSVs and report for one D (its 10 % points and every 0 % point)."""
    from larr.benchmarks.cli import write_report

    for deadline_ms in deadlines:
        size = document["sizes"][0]
        points = [p for p in size["points"]
                  if p["unseen_share"] == 0.0 or (p["unseen_share"] == share and p["miss_deadline_ms"] == deadline_ms)]
        doc = {**document, "config": {**document["config"], "miss_deadline_ms": deadline_ms},
               "sizes": [{**size, "points": points}]}
        directory = out / f"d{deadline_ms:g}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / RESULTS_FILE).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        write_report(doc, directory)


def deadline_curve(document: dict, deadlines: list[float], share: float, concurrency: int) -> dict:
    """Per D: throughput, p50, p99 and the own-embedding share per repeat and their mean ± 95 % interval; the bound
    1.2 x p99(0 %) + D of the same repeat and whether every repeat's p99 is within it."""
    points = document["sizes"][0]["points"]
    repeats = sorted({p["repeat"] for p in points})
    zero = {p["repeat"]: p for p in points if p["unseen_share"] == 0.0 and p["concurrency"] == concurrency}
    by_d = {}
    for deadline_ms in deadlines:
        rows = {p["repeat"]: p for p in points if p["unseen_share"] == share and p["concurrency"] == concurrency
                and p["miss_deadline_ms"] == deadline_ms}
        entry = {"repeats": []}
        for repeat in repeats:
            p, z = rows.get(repeat), zero.get(repeat)
            if p is None or z is None:
                continue
            bound_ms = BOUND_FACTOR * z["p99_us"] / 1e3 + deadline_ms
            entry["repeats"].append({
                "repeat": repeat, "throughput": p["throughput"], "p50_ms": p["p50_us"] / 1e3, "p99_ms": p["p99_us"] / 1e3,
                "p99_0pct_ms": z["p99_us"] / 1e3, "bound_ms": bound_ms, "holds": p["p99_us"] / 1e3 <= bound_ms,
                "own_embedding_share": (p.get("cache") or {}).get("own_embedding_share"),
                "misses": (p.get("cache") or {}).get("misses"),
                "deadline_fallbacks": (p.get("cache") or {}).get("deadline_fallbacks"),
                "hit_rate": (p.get("cache") or {}).get("hit_rate"), "requests": p["requests"],
                "wrapped": p.get("wrapped"), "loadavg_before": p.get("loadavg_before"),
            })
        for key in ("throughput", "p50_ms", "p99_ms", "p99_0pct_ms", "bound_ms", "own_embedding_share"):
            mean, ci = mean_ci95([r[key] for r in entry["repeats"]])
            entry[key], entry[f"{key}_ci95"] = mean, ci
            entry[f"{key}_range"] = [min(r[key] for r in entry["repeats"]), max(r[key] for r in entry["repeats"])] \
                if entry["repeats"] and all(r[key] is not None for r in entry["repeats"]) else None
        entry["holds_every_repeat"] = bool(entry["repeats"]) and all(r["holds"] for r in entry["repeats"])
        by_d[f"{deadline_ms:g}"] = entry
    zero_rows = [{"repeat": r, "throughput": z["throughput"], "p50_ms": z["p50_us"] / 1e3, "p99_ms": z["p99_us"] / 1e3,
                  "hit_rate": (z.get("cache") or {}).get("hit_rate"), "loadavg_before": z.get("loadavg_before")}
                 for r, z in sorted(zero.items())]
    return {
        "criterion": f"p99 at {share:.0%} fresh <= {BOUND_FACTOR} x p99 at 0 % fresh (same repeat) + D, at every D",
        "concurrency": concurrency, "fresh_share": share, "zero_fresh": zero_rows, "by_deadline_ms": by_d,
        "holds_at_every_d": all(e["holds_every_repeat"] for e in by_d.values()),
    }


if __name__ == "__main__":
    raise SystemExit(main())
