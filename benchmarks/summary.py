"""From the measured points to the headline ratios: ``summary.json``, the CSV tables and the report table.

Every ratio is computed at one (LLM size, concurrency, unseen share) point from points of the same
run; a ratio whose inputs were not measured (a part skipped) is ``null``. ``DEFINITIONS`` is written
into summary.json so the file explains itself.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from larr.benchmarks.config import CACHE_OFF, FASTAPI, FULLTEXT, INPROCESS, LARR, LARR_LOADGEN

SUMMARY_FILE = "summary.json"
POINTS_CSV = "points.csv"
BREAKDOWN_CSV = "breakdown.csv"
SUMMARY_CSV = "summary.csv"
PERF_ANALYZER, LOADGEN, IN_PROCESS = "perf_analyzer", "loadgen", "inprocess"

HEADLINE_KEYS = (
    "throughput_ratio_vs_fulltext",
    "token_bound_vs_fulltext",
    "p99_ratio_vs_fulltext",
    "cache_hit_rate",
    "overhead_us_per_request",
    "throughput_ratio_vs_fastapi",
    "embedder_mfu",
)

# Reported next to the headline keys at the top of summary.json.
EXTRA_KEYS = (
    "throughput_ratio_vs_cache_off",
    "p99_ratio_vs_cache_off",
    "simulated_hit_rate",
    "overhead_us_per_request_c1",
    "p99_ratio_vs_fastapi",
    "embedder_tokens_per_s",
    "larr_throughput",
    "fulltext_throughput",
    "cache_off_throughput",
    "larr_p99_ms",
    "fulltext_p99_ms",
    "fulltext_tokens_per_request",
    "miss_tokens_per_request",
)

DEFINITIONS = {
    "throughput_ratio_vs_fulltext": "LARR (cache on) requests/s / full-text baseline requests/s (perf_analyzer, the same "
    "requests)",
    "token_bound_vs_fulltext": "full-text tokens per request / cache-miss tokens per request on the LARR point's "
    "requests: tokens per text from replaying them through the feature cache code, misses from the server's counters "
    "(null: nothing missed)",
    "p99_ratio_vs_fulltext": "LARR p99 latency / full-text p99 latency (below 1: LARR's tail is shorter)",
    "throughput_ratio_vs_cache_off": "LARR cache on requests/s / the same ensemble with cache_capacity 0",
    "p99_ratio_vs_cache_off": "LARR cache on p99 / cache off p99",
    "cache_hit_rate": "feature-cache hits / lookups during the measurement, from the server's counters",
    "simulated_hit_rate": "the same, from replaying the point's requests in order through ONE feature cache; the "
    "server's instances each keep their own LRU, so its measured rate is at most this",
    "overhead_us_per_request": "Triton's time per request at the point (1e6 / throughput) minus the in-process time "
    "per "
    "request of the same models on the same requests (ONNX Runtime, one at a time); negative when Triton's "
    "cross-request batching gains more than the serving costs",
    "overhead_us_per_request_c1": "Triton mean latency at concurrency 1 minus the in-process mean latency of the same "
    "requests",
    "throughput_ratio_vs_fastapi": "Triton LARR requests/s / FastAPI + PyTorch requests/s, both driven by the same "
    "Python "
    "closed-loop generator (not perf_analyzer) with the same warm-up and requests",
    "p99_ratio_vs_fastapi": "Triton LARR p99 / FastAPI p99, same generator",
    "embedder_tokens_per_s": "embedder tokens/s at saturation, in-process, batches of scene-feature texts",
    "embedder_mfu": "embedder_tokens_per_s x forward FLOPs per token (2 N_non-embedding + 2 n_layer n_ctx d_attn) / "
    "fp32 GEMM peak measured in the same run",
}


def find_point(points: Iterable[dict], variant: str, method: str, concurrency: int, unseen_share: float) -> dict | None:
    for point in points:
        if (point["variant"], point["method"], point["concurrency"]) == (variant, method, concurrency) and abs(
            point["unseen_share"] - unseen_share
        ) < 1e-9:
            return point
    return None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def per_request_us(point: dict | None) -> float | None:
    """1e6 / throughput: the time per request the point sustains."""
    return 1e6 / point["throughput"] if point and point["throughput"] > 0 else None


def measured_miss_tokens_per_request(point: dict | None) -> float | None:
    """Cache-miss tokens per request at the server's own miss count.

    The replay runs one cache; the server's feature_cache instances each keep their own, so it misses
    more. Tokens per missed text come from the replay, the number of misses from the server's counters.
    """
    if point is None or not point.get("simulated"):
        return None
    simulated, cache = point["simulated"], point.get("cache")
    if not cache or not simulated.get("misses"):
        return simulated.get("miss_tokens_per_request")
    return simulated["miss_tokens_per_request"] * cache["misses"] / simulated["misses"]


def size_summary(size: dict, concurrency: int, unseen_share: float, gemm_peak_flops: float | None) -> dict:
    """The ratios of one LLM size at (concurrency, unseen_share); ``size`` as in results.json."""
    points = size["points"]
    larr = find_point(points, LARR, PERF_ANALYZER, concurrency, unseen_share)
    fulltext = find_point(points, FULLTEXT, PERF_ANALYZER, concurrency, unseen_share)
    cache_off = find_point(points, CACHE_OFF, PERF_ANALYZER, concurrency, unseen_share)
    inprocess = find_point(points, INPROCESS, IN_PROCESS, concurrency, unseen_share)
    larr_c1 = find_point(points, LARR, PERF_ANALYZER, 1, unseen_share)
    inprocess_c1 = find_point(points, INPROCESS, IN_PROCESS, 1, unseen_share)
    triton_lg = find_point(points, LARR_LOADGEN, LOADGEN, concurrency, unseen_share)
    fastapi = find_point(points, FASTAPI, LOADGEN, concurrency, unseen_share)

    def value(point: dict | None, key: str) -> float | None:
        return None if point is None else point.get(key)

    simulated = (larr or {}).get("simulated") or {}
    saturation = size.get("saturation") or {}
    tokens_per_s = saturation.get("tokens_per_s")
    mfu = None
    if tokens_per_s and gemm_peak_flops:
        mfu = tokens_per_s * saturation["flops_per_token"] / gemm_peak_flops
    overhead = None
    if per_request_us(larr) is not None and per_request_us(inprocess) is not None:
        overhead = per_request_us(larr) - per_request_us(inprocess)
    overhead_c1 = None
    if value(larr_c1, "avg_latency_us") is not None and value(inprocess_c1, "avg_latency_us") is not None:
        overhead_c1 = larr_c1["avg_latency_us"] - inprocess_c1["avg_latency_us"]
    return {
        "label": size["label"],
        "parameters": size["parameters"],
        "non_embedding_parameters": size["non_embedding_parameters"],
        "concurrency": concurrency,
        "unseen_share": unseen_share,
        "throughput_ratio_vs_fulltext": ratio(value(larr, "throughput"), value(fulltext, "throughput")),
        "token_bound_vs_fulltext": ratio(simulated.get("fulltext_tokens_per_request"), measured_miss_tokens_per_request(larr)),
        "p99_ratio_vs_fulltext": ratio(value(larr, "p99_us"), value(fulltext, "p99_us")),
        "throughput_ratio_vs_cache_off": ratio(value(larr, "throughput"), value(cache_off, "throughput")),
        "p99_ratio_vs_cache_off": ratio(value(larr, "p99_us"), value(cache_off, "p99_us")),
        "cache_hit_rate": ((larr or {}).get("cache") or {}).get("hit_rate"),
        "simulated_hit_rate": simulated.get("hit_rate"),
        "overhead_us_per_request": overhead,
        "overhead_us_per_request_c1": overhead_c1,
        "throughput_ratio_vs_fastapi": ratio(value(triton_lg, "throughput"), value(fastapi, "throughput")),
        "p99_ratio_vs_fastapi": ratio(value(triton_lg, "p99_us"), value(fastapi, "p99_us")),
        "embedder_tokens_per_s": tokens_per_s,
        "embedder_mfu": mfu,
        "larr_throughput": value(larr, "throughput"),
        "fulltext_throughput": value(fulltext, "throughput"),
        "cache_off_throughput": value(cache_off, "throughput"),
        "larr_p99_ms": _ms(value(larr, "p99_us")),
        "fulltext_p99_ms": _ms(value(fulltext, "p99_us")),
        "fulltext_tokens_per_request": simulated.get("fulltext_tokens_per_request"),
        "miss_tokens_per_request": simulated.get("miss_tokens_per_request"),
        "models": size["labels"],
    }


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1e3


def build_summary(results: dict) -> dict:
    """summary.json from results.json: the headline size's ratios at the top level, every size under by_llm_size."""
    config = results["config"]
    concurrency, share = config["headline_concurrency"], config["headline_unseen"]
    peak = results["gemm_peak"]["flops"]
    by_size = {s["llm_size"]: size_summary(s, concurrency, share, peak) for s in results["sizes"]}
    headline_size = config["headline_size"]
    if headline_size not in by_size:
        raise ValueError(f"the headline LLM size {headline_size!r} was not measured (sizes: {sorted(by_size)})")
    headline = by_size[headline_size]
    cache_hit_by_share = {
        s["llm_size"]: {
            str(p["unseen_share"]): (p.get("cache") or {}).get("hit_rate")
            for p in s["points"]
            if p["variant"] == LARR and p["method"] == PERF_ANALYZER and p["concurrency"] == concurrency
        }
        for s in results["sizes"]
    }
    history_by_share = {
        s["llm_size"]: {
            str(p["unseen_share"]): p.get("history")
            for p in s["points"]
            if p["variant"] == LARR and p["method"] == PERF_ANALYZER and p["concurrency"] == concurrency
        }
        for s in results["sizes"]
    }
    return {
        "machine": results["machine"]["name"],
        "device": results["machine"]["device"],
        "hardware": results["machine"],
        "headline": {
            "llm_size": headline_size, "label": headline["label"], "concurrency": concurrency, "unseen_share": share,
        },
        **{key: headline[key] for key in HEADLINE_KEYS},
        **{key: headline[key] for key in EXTRA_KEYS},
        "by_llm_size": by_size,
        "cache_hit_rate_by_unseen_share": cache_hit_by_share,
        "requests_before_by_unseen_share": history_by_share,
        "long_run": results.get("long_run", {}),
        "gemm_peak_gflops": peak / 1e9,
        "method": {
            "candidates": config["candidates"],
            "warmup_requests": config["warmup_requests"],
            "zipf_exponent": config["zipf_exponent"],
            "cache_capacity": config["cache_capacity"],
            "grids": config["grids"],
        },
        "definitions": DEFINITIONS,
        "started": results["started"],
        "duration_s": results["duration_s"],
        "versions": results["versions"],
    }


# --------------------------------------------------------------------------------------------- CSV tables

POINT_COLUMNS = (
    "llm_size", "variant", "method", "unseen_share", "concurrency", "requests", "seconds", "throughput",
    "avg_latency_us", "p50_us", "p90_us", "p95_us", "p99_us", "cache_hit_rate", "simulated_hit_rate",
    "miss_tokens_per_request", "fulltext_tokens_per_request", "cache_off_tokens_per_request",
)
BREAKDOWN_COLUMNS = (
    "llm_size", "variant", "unseen_share", "concurrency", "model", "requests", "executions", "avg_batch", "queue_us",
    "compute_input_us", "compute_infer_us", "compute_output_us",
)


def point_rows(results: dict) -> list[dict]:
    rows = []
    for size in results["sizes"]:
        for point in size["points"]:
            simulated = point.get("simulated") or {}
            rows.append({
                **{key: point.get(key) for key in POINT_COLUMNS if key in point},
                "cache_hit_rate": (point.get("cache") or {}).get("hit_rate"),
                "simulated_hit_rate": simulated.get("hit_rate"),
                "miss_tokens_per_request": simulated.get("miss_tokens_per_request"),
                "fulltext_tokens_per_request": simulated.get("fulltext_tokens_per_request"),
                "cache_off_tokens_per_request": simulated.get("cache_off_tokens_per_request"),
            })
    return rows


def breakdown_rows(results: dict) -> list[dict]:
    rows = []
    for size in results["sizes"]:
        for point in size["points"]:
            for model, stats in (point.get("breakdown") or {}).items():
                rows.append({
                    "llm_size": point["llm_size"], "variant": point["variant"], "unseen_share": point["unseen_share"],
                    "concurrency": point["concurrency"], "model": model, **stats,
                })
    return rows


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})


def _cell(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


SUMMARY_COLUMNS = ("llm_size", "label", "parameters", *HEADLINE_KEYS, "throughput_ratio_vs_cache_off",
                   "overhead_us_per_request_c1", "p99_ratio_vs_fastapi", "embedder_tokens_per_s",
                   "larr_throughput", "fulltext_throughput", "cache_off_throughput", "larr_p99_ms", "fulltext_p99_ms")


def write_outputs(results: dict, directory: Path) -> dict:
    """summary.json, summary.csv, points.csv, breakdown.csv in ``directory``; returns the summary."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = build_summary(results)
    (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    write_csv(directory / POINTS_CSV, POINT_COLUMNS, point_rows(results))
    write_csv(directory / BREAKDOWN_CSV, BREAKDOWN_COLUMNS, breakdown_rows(results))
    write_csv(directory / SUMMARY_CSV, SUMMARY_COLUMNS,
              ({"llm_size": size, **values} for size, values in summary["by_llm_size"].items()))
    return summary


# --------------------------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def report_markdown(summary: dict, plots: Sequence[str] = ()) -> str:
    """The report table (one row per LLM size) and the plots, as Markdown."""
    head = summary["headline"]
    lines = [
        f"Machine `{summary['machine']}` ({summary['hardware']['cpu_model']}, {summary['hardware']['cores']} cores"
        + (f", {summary['hardware']['gpu_model']}" if summary["hardware"].get("gpu_model") else "")
        + f"), run {summary['started']}, {summary['duration_s'] / 60:.1f} min. "
        f"Concurrency {head['concurrency']}, {head['unseen_share']:.0%} never-seen scene texts, "
        f"{summary['method']['candidates']} candidates per request; "
        f"fp32 GEMM peak {summary['gemm_peak_gflops']:.0f} GFLOP/s.",
        "",
        "| LLM | params | LARR / full-text req/s | token bound | p99 LARR / full-text | LARR / cache-off req/s "
        "| cache hit rate | serving overhead µs/req | Triton / FastAPI req/s | embedder tokens/s | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, row in summary["by_llm_size"].items():
        lines.append(
            f"| {size}: {row['label']} | {row['parameters'] / 1e6:.0f}M "
            f"| {_fmt(row['throughput_ratio_vs_fulltext'], '.2f', '×')} "
            f"| {_fmt(row['token_bound_vs_fulltext'], '.2f', '×')} "
            f"| {_fmt(row['p99_ratio_vs_fulltext'], '.3f')} "
            f"| {_fmt(row['throughput_ratio_vs_cache_off'], '.2f', '×')} "
            f"| {_fmt(row['cache_hit_rate'], '.1%')} | {_fmt(row['overhead_us_per_request'], ',.0f')} "
            f"| {_fmt(row['throughput_ratio_vs_fastapi'], '.2f', '×')} | {_fmt(row['embedder_tokens_per_s'], ',.0f')} "
            f"| {_fmt(row['embedder_mfu'], '.1%')} |"
        )
    for plot in plots:
        lines += ["", f"![{Path(plot).stem}]({plot})"]
    return "\n".join(lines) + "\n"
