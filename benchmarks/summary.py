"""From the measured points to the headline ratios: ``summary.json``, the CSV tables and the report table.

Every ratio is computed at one (LLM size, concurrency, unseen share) point from points of the same
run *and the same repeat*; a ratio whose inputs were not measured (a part skipped) is ``null``. With R
repeats (``larr bench --repeats R``: fresh servers, independent request streams) each number is the
mean over the repeats and ``<key>_ci95`` beside it is the half-width of its 95 % interval, Student's t
with R - 1 degrees of freedom (null for R = 1); ``<key>_repeats`` lists the per-repeat values of the
ratios. ``DEFINITIONS`` is written into summary.json so the file explains itself.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from larr.benchmarks.config import CACHE_OFF, FASTAPI, FULLTEXT, INPROCESS, LARR, LARR_LOADGEN, TINY

# The tiny model's ratios read as the serving stack's costs, not as the cache's worth (README, "Results").
TINY_RATIOS_NOTE = (
    "At the tiny (1M-parameter) size the LLM costs almost nothing, so its ratios measure the serving stack: "
    "a Triton / FastAPI ratio below 1× there means the per-execute IPC of Triton's python steps dominates a tiny "
    "model. At the SmolLM-135M shape Triton serves 1.35–1.52× FastAPI's requests/s: "
    "benchmarks/results/cpu-2core-amd-epyc-store-warm-inprocess/."
)

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

BY_SHARE_KEYS = ("throughput_ratio_vs_fulltext_by_fresh_share", "token_bound_share_by_fresh_share")

# Reported next to the headline keys at the top of summary.json.
EXTRA_KEYS = (
    "throughput_ratio_vs_cache_off",
    "p99_ratio_vs_cache_off",
    "simulated_hit_rate",
    "overhead_us_per_request_c1",
    "p99_ratio_vs_fastapi",
    "embedder_tokens_per_s",
    "embedder_tokens_per_s_int8",
    "embedder_int8_speedup",
    "larr_throughput",
    "fulltext_throughput",
    "cache_off_throughput",
    "larr_p99_ms",
    "fulltext_p99_ms",
    "own_embedding_share",
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
    "own_embedding_share": "fresh_text_policy deadline: the share of the LARR point's cache misses answered with "
    "their own embedding, 1 - deadline_fallbacks_total / misses_total from the server's counters (null: nothing "
    "missed; 1 under strict)",
    "cache_hit_rate": "feature-cache hits / lookups during the measurement, from the server's counters",
    "simulated_hit_rate": "the same, from replaying the point's requests in order through ONE feature cache; the "
    "server's instances each keep their own LRU, so its measured rate is at most this",
    "overhead_us_per_request": "Triton's time per request at the point (1e6 / throughput) minus the in-process time "
    "per request of the same models on the same requests, same cache state, in batches of the size Triton's ctr "
    "step formed at that point, ceil(concurrency / batch) batches in flight on as many threads (ONNX Runtime releases "
    "the GIL): what serving adds beyond the models' work",
    "overhead_us_per_request_c1": "Triton mean latency at concurrency 1 minus the in-process mean latency of the same "
    "requests",
    "throughput_ratio_vs_fastapi": "Triton LARR requests/s / FastAPI + PyTorch requests/s, both driven by the same "
    "Python "
    "closed-loop generator (not perf_analyzer) with the same warm-up and requests",
    "p99_ratio_vs_fastapi": "Triton LARR p99 / FastAPI p99, same generator",
    "embedder_tokens_per_s": "embedder tokens/s at saturation, in-process, batches of scene-feature texts",
    "embedder_tokens_per_s_int8": "the same batches through the embedder's int8 conversion (larr export "
    "--embedder-precision int8's recipe), interleaved with the fp32 graph in rounds; null where the embedder does not "
    "run on ONNX Runtime's CPU provider",
    "embedder_int8_speedup": "int8 tokens/s / fp32 tokens/s of the same round, mean over the rounds (ci95: over the "
    "rounds); its parity to fp32 is measured by benchmarks/studies/embedder-cost/embedder_precision.py",
    "embedder_mfu": "embedder_tokens_per_s x forward FLOPs per token (2 N_non-embedding + 2 n_layer n_ctx d_attn) / "
    "fp32 GEMM peak: the best of the measurements in the same run (at its start and next to the saturation run)",
    "throughput_ratio_vs_fulltext_by_fresh_share": "per fresh-text share: LARR requests/s at that share / full-text "
    "requests/s at the headline share, both at the headline concurrency (the full-text baseline embeds every scene "
    "whole, so the share of fresh texts does not change its work; it is measured once per repeat)",
    "token_bound_share_by_fresh_share": "per fresh-text share: throughput_ratio_vs_fulltext_by_fresh_share / the token "
    "bound of that share's LARR point (full-text tokens per request / cache-miss tokens per request, as "
    "token_bound_vs_fulltext): how much of what its embedded tokens allow LARR serves (null: nothing missed)",
    "embedder_mfu_precompute": "the scene-table precompute at export (every training text, large batches): model "
    "FLOP/s / the matmul peak measured by that export",
    "repeats": "independent repeats behind every mean (fresh servers, request streams seeded stream_seed + repeat)",
}

# Student's t 0.975 quantiles by degrees of freedom (R - 1); beyond the table, the largest df below is used
# (slightly wider than exact: conservative).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042}
# Keys that name the point rather than measure it: never averaged.
_IDENTITY_KEYS = frozenset({"label", "parameters", "non_embedding_parameters", "concurrency", "unseen_share", "models"})
# Measured once per size, not per repeat (the embedder at saturation, the precompute at export): no interval.
# The int8 speedup's interval, where given, is over the rounds of that one run.
_ONCE_KEYS = frozenset({"embedder_tokens_per_s", "embedder_mfu", "embedder_mfu_precompute", "embedder_tokens_per_s_int8",
                        "embedder_int8_speedup"})


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
    embedded = cache["misses"] - cache.get("joined", 0)  # a joined miss waited for another batch's call
    return simulated["miss_tokens_per_request"] * embedded / simulated["misses"]


def token_bound(larr: dict | None) -> float | None:
    """Full-text tokens per request / cache-miss tokens per request on a LARR point's requests (None: nothing missed)."""
    simulated = (larr or {}).get("simulated") or {}
    return ratio(simulated.get("fulltext_tokens_per_request"), measured_miss_tokens_per_request(larr))


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
    peak = max(gemm_peak_flops or 0.0, saturation.get("gemm_peak_flops") or 0.0)  # the best measured in the run
    if tokens_per_s and peak:
        mfu = tokens_per_s * saturation["flops_per_token"] / peak
    int8 = saturation.get("int8") or {}
    int8_speedup, int8_speedup_ci95 = mean_ci95(int8.get("speedup_by_round") or [])
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
        "token_bound_vs_fulltext": token_bound(larr),
        "p99_ratio_vs_fulltext": ratio(value(larr, "p99_us"), value(fulltext, "p99_us")),
        "throughput_ratio_vs_cache_off": ratio(value(larr, "throughput"), value(cache_off, "throughput")),
        "p99_ratio_vs_cache_off": ratio(value(larr, "p99_us"), value(cache_off, "p99_us")),
        "cache_hit_rate": ((larr or {}).get("cache") or {}).get("hit_rate"),
        "own_embedding_share": ((larr or {}).get("cache") or {}).get("own_embedding_share"),
        "simulated_hit_rate": simulated.get("hit_rate"),
        "overhead_us_per_request": overhead,
        "overhead_us_per_request_c1": overhead_c1,
        "throughput_ratio_vs_fastapi": ratio(value(triton_lg, "throughput"), value(fastapi, "throughput")),
        "p99_ratio_vs_fastapi": ratio(value(triton_lg, "p99_us"), value(fastapi, "p99_us")),
        "embedder_tokens_per_s": tokens_per_s,
        "embedder_tokens_per_s_int8": int8.get("tokens_per_s"),
        "embedder_int8_speedup": int8_speedup,
        "embedder_int8_speedup_ci95": int8_speedup_ci95,
        "embedder_mfu": mfu,
        "embedder_mfu_precompute": (size.get("precompute") or {}).get("mfu"),
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


def _hit_rate_by_share(size: dict, concurrency: int) -> dict[str, float | None]:
    """{share: the LARR point's measured hit rate at ``concurrency``}, the mean over repeats."""
    rates: dict[str, list[float | None]] = {}
    for p in size["points"]:
        if p["variant"] == LARR and p["method"] == PERF_ANALYZER and p["concurrency"] == concurrency:
            rates.setdefault(str(p["unseen_share"]), []).append((p.get("cache") or {}).get("hit_rate"))
    return {share: mean_ci95(values)[0] for share, values in rates.items()}


def t975(degrees_of_freedom: int) -> float:
    """Student's t 0.975 quantile (table; conservative between its rows)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {degrees_of_freedom}")
    return _T975[max(df for df in _T975 if df <= degrees_of_freedom)]


def mean_ci95(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(mean, half-width of the 95 % interval) over repeats; (None, None) if any repeat lacks the value,
    (value, None) for a single repeat."""
    if not values or any(v is None for v in values):
        return None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate_repeats(rows: Sequence[dict]) -> dict:
    """One summary row from per-repeat rows: identity keys from the first, every measured number as its mean
    with ``<key>_ci95``, and ``<key>_repeats`` (the values) for the ratios; nested {share: value} maps alike."""
    first, out = rows[0], {"repeats": len(rows)}
    for key, value in first.items():
        values = [row.get(key) for row in rows]
        if key.endswith("_ci95") and key.removesuffix("_ci95") in _ONCE_KEYS:
            continue  # a once-measured key's own interval: taken with its key below
        if key in _IDENTITY_KEYS or not (value is None or _is_number(value) or isinstance(value, dict)):
            out[key] = value
        elif key in _ONCE_KEYS:
            out[key], out[f"{key}_ci95"] = value, first.get(f"{key}_ci95")
        elif isinstance(value, dict):  # e.g. {fresh share: ratio}
            shares = {inner: mean_ci95([(row.get(key) or {}).get(inner) for row in rows]) for inner in value}
            out[key] = {inner: mean for inner, (mean, _) in shares.items()}
            out[f"{key}_ci95"] = {inner: ci for inner, (_, ci) in shares.items()}
        else:
            out[key], out[f"{key}_ci95"] = mean_ci95(values)
            if "ratio" in key or key == "token_bound_vs_fulltext":
                out[f"{key}_repeats"] = values
    return out


def _repeat_view(size: dict, repeat: int) -> dict:
    """``size`` (as in results.json) with only the points of one repeat (older results have no repeat field: 0)."""
    return {**size, "points": [p for p in size["points"] if p.get("repeat", 0) == repeat]}


def repeats_of(size: dict) -> list[int]:
    return sorted({p.get("repeat", 0) for p in size["points"]}) or [0]


def fresh_share_ratios(size: dict, concurrency: int, headline_share: float) -> dict[str, float | None]:
    """{share: LARR requests/s at share / full-text requests/s at the headline share} at ``concurrency``."""
    points = size["points"]
    fulltext = find_point(points, FULLTEXT, PERF_ANALYZER, concurrency, headline_share)
    shares = sorted({p["unseen_share"] for p in points if p["variant"] == LARR and p["method"] == PERF_ANALYZER})
    return {
        str(share): ratio((find_point(points, LARR, PERF_ANALYZER, concurrency, share) or {}).get("throughput"),
                          (fulltext or {}).get("throughput"))
        for share in shares
    }


def token_bound_shares(size: dict, concurrency: int, speedups: dict[str, float | None]) -> dict[str, float | None]:
    """{share: speedup at that share (:func:`fresh_share_ratios`) / that LARR point's :func:`token_bound`}.

    The token bound is the speed-up LARR would have if serving cost nothing but embedding tokens at the full-text
    baseline's rate; the share says how much of it LARR reaches (the strict policy's target: >= 0.8 at 10 % fresh)."""
    return {
        share: ratio(speedup, token_bound(find_point(size["points"], LARR, PERF_ANALYZER, concurrency, float(share))))
        for share, speedup in speedups.items()
    }


def summarise_size(size: dict, concurrency: int, unseen_share: float, gemm_peak_flops: float | None) -> dict:
    """:func:`size_summary` per repeat, aggregated (mean and ci95), with the by-fresh-share ratios."""
    rows = []
    for repeat in repeats_of(size):
        view = _repeat_view(size, repeat)
        row = size_summary(view, concurrency, unseen_share, gemm_peak_flops)
        speedups = fresh_share_ratios(view, concurrency, unseen_share)
        row["throughput_ratio_vs_fulltext_by_fresh_share"] = speedups
        row["token_bound_share_by_fresh_share"] = token_bound_shares(view, concurrency, speedups)
        rows.append(row)
    return aggregate_repeats(rows)


def build_summary(results: dict) -> dict:
    """summary.json from results.json: the headline size's ratios at the top level, every size under by_llm_size."""
    config = results["config"]
    concurrency, share = config["headline_concurrency"], config["headline_unseen"]
    peak = results["gemm_peak"]["flops"]
    by_size = {s["llm_size"]: summarise_size(s, concurrency, share, peak) for s in results["sizes"]}
    headline_size = config["headline_size"]
    if headline_size not in by_size:
        raise ValueError(f"the headline LLM size {headline_size!r} was not measured (sizes: {sorted(by_size)})")
    headline = by_size[headline_size]
    cache_hit_by_share = {s["llm_size"]: _hit_rate_by_share(s, concurrency) for s in results["sizes"]}
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
        "repeats": headline["repeats"],
        **{key: headline[key] for key in HEADLINE_KEYS},
        **{key: headline[key] for key in EXTRA_KEYS},
        **{f"{key}_ci95": headline[f"{key}_ci95"] for key in (*HEADLINE_KEYS, *EXTRA_KEYS, *BY_SHARE_KEYS)},
        **{key: headline[key] for key in BY_SHARE_KEYS},
        "embedder_mfu_precompute": headline["embedder_mfu_precompute"],
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
    "avg_latency_us", "p50_us", "p90_us", "p95_us", "p99_us", "cache_hit_rate", "own_embedding_share", "simulated_hit_rate",
    "miss_tokens_per_request", "fulltext_tokens_per_request", "cache_off_tokens_per_request", "repeat", "batch", "workers",
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
                "own_embedding_share": (point.get("cache") or {}).get("own_embedding_share"),
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


def _fmt_ci(row: dict, key: str, spec: str, suffix: str = "") -> str:
    """``row[key]`` formatted, with `` ± ci95`` when the row has an interval for it."""
    ci = row.get(f"{key}_ci95")
    text = _fmt(row[key], spec, suffix)
    return text if ci is None or row[key] is None else f"{text} ± {format(ci, spec)}"


def report_markdown(summary: dict, plots: Sequence[str] = ()) -> str:
    """The report table (one row per LLM size) and the plots, as Markdown."""
    head = summary["headline"]
    lines = [
        f"Machine `{summary['machine']}` ({summary['hardware']['cpu_model']}, {summary['hardware']['cores']} cores"
        + (f", {summary['hardware']['gpu_model']}" if summary["hardware"].get("gpu_model") else "")
        + f"), run {summary['started']}, {summary['duration_s'] / 60:.1f} min. "
        f"Concurrency {head['concurrency']}, {head['unseen_share']:.0%} never-seen scene texts, "
        f"{summary['method']['candidates']} candidates per request; "
        f"fp32 GEMM peak {summary['gemm_peak_gflops']:.0f} GFLOP/s. "
        f"{summary['repeats']} repeat(s) per point; ± is the 95 % interval of the mean over repeats.",
        "",
        "| LLM | params | LARR / full-text req/s | token bound | p99 LARR / full-text | LARR / cache-off req/s "
        "| cache hit rate | serving overhead µs/req | Triton / FastAPI req/s | embedder tokens/s | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, row in summary["by_llm_size"].items():
        lines.append(
            f"| {size}: {row['label']} | {row['parameters'] / 1e6:.0f}M "
            f"| {_fmt_ci(row, 'throughput_ratio_vs_fulltext', '.2f', '×')} "
            f"| {_fmt_ci(row, 'token_bound_vs_fulltext', '.2f', '×')} "
            f"| {_fmt_ci(row, 'p99_ratio_vs_fulltext', '.3f')} "
            f"| {_fmt_ci(row, 'throughput_ratio_vs_cache_off', '.2f', '×')} "
            f"| {_fmt(row['cache_hit_rate'], '.1%')} | {_fmt(row['overhead_us_per_request'], ',.0f')} "
            f"| {_fmt(row['throughput_ratio_vs_fastapi'], '.2f', '×')} | {_fmt(row['embedder_tokens_per_s'], ',.0f')} "
            f"| {_fmt(row['embedder_mfu'], '.1%')} |"
        )
    if TINY in summary["by_llm_size"]:  # what a first-time user reads after `make demo`
        lines += ["", TINY_RATIOS_NOTE]
    for plot in plots:
        lines += ["", f"![{Path(plot).stem}]({plot})"]
    return "\n".join(lines) + "\n"
