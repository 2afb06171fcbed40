"""The serving tables: the CPU and GPU benchmark headlines, the soak, the demo's timings and the scale-out measurements."""

from __future__ import annotations

import statistics

from larr.result_tables.sources import Source, check_stored, pct, signed, source_line, table

DEMO_STEPS = ("data", "training", "export", "serving", "querying", "benchmark")


# --------------------------------------------------------------------------------------------- serving


def serving_cpu_table(summary: Source, fastapi: Source) -> str:
    """The serving headline per LLM size: LARR against the full-text baseline and the cache off; Triton against
    FastAPI from ``fastapi``, the run that serves both from the same repository, store and runtime."""
    rows = [[f"{_short_label(size['label'])} ({size['parameters'] / 1e6:,.1f}M)",
             f"{size['throughput_ratio_vs_fulltext']:.2f}×", f"{size['token_bound_vs_fulltext']:.2f}×",
             f"{size['p99_ratio_vs_fulltext']:.2f}", f"{size['throughput_ratio_vs_cache_off']:.2f}×",
             pct(size["cache_hit_rate"])] for size in summary.data["by_llm_size"].values()]
    lines = table(["LLM", "LARR / full-text req/s", "token bound", "p99 LARR / full-text", "LARR / cache-off req/s",
                    "cache hit rate"], ["---", "---:", "---:", "---:", "---:", "---:"], rows)
    headline = fastapi.data["headline"]
    size = fastapi.data["by_llm_size"][headline["llm_size"]]
    ratios = " and ".join(f"{r:.2f}×" for r in size["throughput_ratio_vs_fastapi_repeats"])
    p99 = " and ".join(f"{r:.2f}×" for r in size["p99_ratio_vs_fastapi_repeats"])
    line = (f"Triton / FastAPI, both serving the same repository, store and runtime ({headline['label']}, concurrency "
            f"{headline['concurrency']}, {pct(headline['unseen_share'])} fresh texts, {size['repeats']} repeats): "
            f"**{ratios}** the requests/s, with a p99 {p99} FastAPI's.")
    return "\n".join([*lines, "", line, "", source_line(summary, note=_serving_note(summary)), "",
                      source_line(fastapi, note=_serving_note(fastapi))])


def serving_cpu_sizes_table(summary: Source) -> str:
    """The CPU benchmark's three LLM sizes, every column but Triton / FastAPI (that run's FastAPI ran PyTorch eager
    against Triton's ONNX Runtime)."""
    rows = [[size["label"], f"{size['parameters'] / 1e6:,.1f}M", f"{size['throughput_ratio_vs_fulltext']:.2f}×",
             f"{size['token_bound_vs_fulltext']:.2f}×", f"{size['p99_ratio_vs_fulltext']:.2f}",
             f"{size['throughput_ratio_vs_cache_off']:.2f}×", pct(size["cache_hit_rate"]),
             f"{size['overhead_us_per_request']:,.0f}", f"{size['embedder_tokens_per_s']:,.0f}", pct(size["embedder_mfu"])]
            for size in summary.data["by_llm_size"].values()]
    lines = table(["LLM", "params", "LARR / full-text req/s", "token bound", "p99 LARR / full-text",
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
    rows = [[pct(float(share)), f"{ratio:.2f}×", pct(hit_rates[share])]
            for share, ratio in sorted(by_share.items(), key=lambda item: float(item[0]))]
    lines = table(["fresh scene texts", "LARR / full-text req/s", "cache hit rate"], ["---:", "---:", "---:"], rows)
    data = summary.data
    at_headline = (f"At {pct(headline['unseen_share'])} fresh: LARR {data['larr_throughput']:,.1f} req/s, full-text "
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
    return (f" (concurrency {headline['concurrency']}, {pct(headline['unseen_share'])} fresh texts; {machine['name']}; "
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
           f"{rss['baseline_bytes'] / mib:.1f} → {rss['peak_bytes'] / mib:.1f} MiB ({signed(100 * rss['growth'], 1)} %, "
           f"bound {100 * config['max_rss_growth']:.0f} %)", str(sum(totals["stub_restarts"].values())),
           "passed" if soak.data["passed"] else "failed: " + "; ".join(soak.data["failures"]), load]
    lines = table(["requests", "errors", "req/s", "p50", "p99", "RSS after warm-up → peak (growth)", "stub reloads",
                    "verdict", "machine load (1 min)"], ["---:", "---:", "---:", "---:", "---:", "---:", "---:", "---",
                                                         "---:"], [row])
    machine = soak.data["machine"]
    note = (f" (`{soak.data['command']}`: concurrency {config['concurrency']}, {pct(config['fresh_share'])} fresh scene "
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
    lines = table(["`larr demo` step", "wall time"], ["---", "---:"], rows)
    machine = timings.data["machine"]
    note = (f" (`{timings.data['command']}`; {machine['name']}: {machine['cpu_model']}, {machine['cores']} cores; "
            f"load average {timings.data['load_average_start']:.1f} at the start, "
            f"{timings.data['load_average_end']:.1f} at the end; started {timings.data['started']})")
    return "\n".join([*lines, "", source_line(timings, note=note)])


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"



# --------------------------------------------------------------------------------------------- scale-out


def scale_build_table(results: Source) -> str:
    """The scene table built by the local engine and by Ray Data on 1 and 2 workers: embed-stage seconds, texts/s, and
    the 2-over-1-worker ratio (recomputed from the runs, checked against the stored one)."""
    build = results.data["build"]
    runs = build["runs"]
    rows = [[label, f"{run['seconds']:.1f}", f"{run['texts_per_s']:,.0f}", f"{run['rows']:,}"] for label, run in runs.items()]
    ray = [run for label, run in runs.items() if "ray" in label]
    ratio = ray[-1]["texts_per_s"] / ray[0]["texts_per_s"]
    check_stored(Source(results.path, build), "ray_2_over_1_workers", ratio)
    lines = table(["build", "embed stage s", "texts/s", "table rows"], ["---", "---:", "---:", "---:"], rows)
    ratio_line = f"Two workers embed **{ratio:.2f}×** as fast as one ({build['note']})."
    return "\n".join([*lines, "", ratio_line, "", source_line(results, note=f"; {results.data['machine']['shared']}")])


def scale_load_table(results: Source) -> str:
    """``larr load-store`` rows/s per target: the median and the range over the repeats."""
    load = results.data["load_store"]
    rows = []
    for target, runs in load["runs"].items():
        rates = [run["rows_per_s"] for run in runs]
        rows.append([target, f"{statistics.median(rates):,.0f}", f"{min(rates):,.0f}–{max(rates):,.0f}", str(len(rates))])
    lines = table([f"target ({load['rows']:,} rows, batches of {load['batch_size']:,})", "rows/s (median)", "range",
                   "repeats"], ["---", "---:", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(Source(results.path, load), note=f"; {results.data['machine']['shared']}")])
