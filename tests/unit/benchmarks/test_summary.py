"""From measured points to summary.json, the CSV tables, the report and the plots (synthetic results)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from larr.benchmarks.config import CACHE_OFF, FASTAPI, FULLTEXT, INPROCESS, LARR, LARR_LOADGEN
from larr.benchmarks.plots import plot_all
from larr.benchmarks.summary import (
    HEADLINE_KEYS,
    TINY_RATIOS_NOTE,
    build_summary,
    find_point,
    report_markdown,
    size_summary,
    write_outputs,
)


def point(variant, method, concurrency, throughput, p99_us, share=0.1, avg_us=None, cache=None, simulated=None):
    return {
        "llm_size": "x", "variant": variant, "method": method, "unseen_share": share, "concurrency": concurrency,
        "requests": 100, "seconds": 1.0, "throughput": throughput, "avg_latency_us": avg_us, "p50_us": p99_us / 2,
        "p90_us": None, "p95_us": None, "p99_us": p99_us, "cache": cache, "simulated": simulated, "breakdown": None,
    }


def size_result(name: str, parameters: int, speed: float) -> dict:
    """A size whose LARR is ``speed`` x faster than its full-text baseline at concurrency 16."""
    simulated = {"hit_rate": 0.85, "fulltext_tokens_per_request": 30.0, "miss_tokens_per_request": 5.0,
                 "cache_off_tokens_per_request": 31.0}
    points = [
        point(LARR, "perf_analyzer", 1, 50.0, 30_000.0, avg_us=20_000.0,
              cache={"hits": 8, "misses": 2, "hit_rate": 0.8}),
        point(LARR, "perf_analyzer", 16, 100.0 * speed, 200_000.0, cache={"hits": 9, "misses": 1, "hit_rate": 0.9},
              simulated=simulated),
        point(LARR, "perf_analyzer", 16, 300.0, 100_000.0, share=0.0,
              cache={"hits": 99, "misses": 1, "hit_rate": 0.99}),
        point(LARR, "perf_analyzer", 16, 20.0, 900_000.0, share=0.5, cache={"hits": 1, "misses": 1, "hit_rate": 0.5}),
        point(FULLTEXT, "perf_analyzer", 16, 100.0, 400_000.0),
        point(CACHE_OFF, "perf_analyzer", 16, 50.0, 800_000.0, cache={"hits": 0, "misses": 10, "hit_rate": 0.0}),
        point(INPROCESS, "inprocess", 1, 60.0, 18_000.0, avg_us=15_000.0),
        point(INPROCESS, "inprocess", 16, 400.0, 3_000.0, avg_us=2_500.0),
        point(FASTAPI, "loadgen", 16, 40.0, 1_000_000.0),
        point(LARR_LOADGEN, "loadgen", 16, 120.0, 250_000.0),
    ]
    for p in points:
        p["llm_size"] = name
    return {
        "llm_size": name, "label": f"{name} label", "labels": {"embedder": "random"}, "parameters": parameters,
        "non_embedding_parameters": parameters // 2, "points": points, "segments": {},
        "saturation": {"tokens_per_s": 1000.0, "flops_per_token": 2e8},
    }


@pytest.fixture()
def results() -> dict:
    grids = {"a": {"concurrency": [1, 16]}, "b": {"concurrency": [1, 16]}}
    return {
        "machine": {"name": "cpu-2core-test", "device": "cpu", "cpu_model": "Test CPU", "cores": 2, "gpu_model": None},
        "config": {"headline_concurrency": 16, "headline_unseen": 0.1, "headline_size": "b", "candidates": 100,
                   "warmup_requests": 32, "zipf_exponent": 1.1, "cache_capacity": 100000, "grids": grids},
        "gemm_peak": {"flops": 1e12, "size": 4096, "device": "cpu", "threads": 2},
        "sizes": [size_result("a", 1_000_000, 1.0), size_result("b", 135_000_000, 2.5)],
        "started": "2026-01-01T00:00:00", "duration_s": 600.0, "versions": {"larr": "0.1.0"},
    }


def test_find_point(results):
    points = results["sizes"][0]["points"]
    assert find_point(points, LARR, "perf_analyzer", 16, 0.0)["throughput"] == 300.0
    assert find_point(points, LARR, "loadgen", 16, 0.1) is None


def test_ratios_of_one_size(results):
    row = size_summary(results["sizes"][1], 16, 0.1, gemm_peak_flops=1e12)
    assert row["throughput_ratio_vs_fulltext"] == pytest.approx(2.5)
    assert row["token_bound_vs_fulltext"] == pytest.approx(6.0)
    assert row["p99_ratio_vs_fulltext"] == pytest.approx(0.5)
    assert row["throughput_ratio_vs_cache_off"] == pytest.approx(5.0)
    assert row["cache_hit_rate"] == pytest.approx(0.9)  # measured by the server, not the simulated 0.85
    assert row["simulated_hit_rate"] == pytest.approx(0.85)
    assert row["overhead_us_per_request"] == pytest.approx(1e6 / 250 - 1e6 / 400)
    assert row["overhead_us_per_request_c1"] == pytest.approx(20_000 - 15_000)
    assert row["throughput_ratio_vs_fastapi"] == pytest.approx(3.0)
    assert row["p99_ratio_vs_fastapi"] == pytest.approx(0.25)
    assert row["embedder_mfu"] == pytest.approx(1000 * 2e8 / 1e12)


def test_missing_parts_give_null_ratios(results):
    size = results["sizes"][0]
    size["points"] = [p for p in size["points"] if p["variant"] not in (FASTAPI, INPROCESS, FULLTEXT)]
    size["saturation"] = None
    row = size_summary(size, 16, 0.1, gemm_peak_flops=1e12)
    for key in ("throughput_ratio_vs_fulltext", "p99_ratio_vs_fulltext", "overhead_us_per_request",
                "throughput_ratio_vs_fastapi", "embedder_mfu"):
        assert row[key] is None, key
    assert row["throughput_ratio_vs_cache_off"] == pytest.approx(2.0)


def test_summary_has_the_headline_keys_and_every_size(results):
    summary = build_summary(results)
    for key in HEADLINE_KEYS:
        assert key in summary and summary[key] is not None, key
    assert summary["headline"] == {"llm_size": "b", "label": "b label", "concurrency": 16, "unseen_share": 0.1}
    assert summary["throughput_ratio_vs_fulltext"] == pytest.approx(2.5)
    assert set(summary["by_llm_size"]) == {"a", "b"}
    assert summary["by_llm_size"]["a"]["throughput_ratio_vs_fulltext"] == pytest.approx(1.0)
    for key in HEADLINE_KEYS:
        assert key in summary["by_llm_size"]["a"], key
    assert summary["cache_hit_rate_by_unseen_share"]["b"] == {"0.0": 0.99, "0.1": 0.9, "0.5": 0.5}
    assert set(summary["definitions"]) >= set(HEADLINE_KEYS)
    json.dumps(summary, allow_nan=False)  # strict JSON: no NaN / inf


def test_headline_size_must_be_measured(results):
    results["config"]["headline_size"] = "c"
    with pytest.raises(ValueError, match="headline"):
        build_summary(results)


def test_outputs_tables_report_and_plots(results, tmp_path):
    summary = write_outputs(results, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["machine"] == "cpu-2core-test"
    with open(tmp_path / "points.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(len(s["points"]) for s in results["sizes"])
    larr16 = next(r for r in rows if r["llm_size"] == "b" and r["variant"] == LARR and r["concurrency"] == "16"
                  and r["unseen_share"] == "0.1")
    assert float(larr16["cache_hit_rate"]) == pytest.approx(0.9)
    assert float(larr16["fulltext_tokens_per_request"]) == pytest.approx(30.0)
    with open(tmp_path / "summary.csv", newline="") as handle:
        assert [r["llm_size"] for r in csv.DictReader(handle)] == ["a", "b"]
    plots = plot_all(results, summary, tmp_path)
    for name in plots:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = report_markdown(summary, plots)
    assert "| b: b label | 135M | 2.50× | 6.00× |" in report
    assert all(f"]({name})" in report for name in plots)
    assert TINY_RATIOS_NOTE not in report  # sizes "a" and "b": no tiny model to explain


def test_the_report_says_what_the_tiny_models_ratios_mean(results):
    """`make demo`'s smoke benchmark serves the tiny model only: its report says what those ratios measure and
    where the numbers of an LLM-sized embedder are."""
    summary = build_summary(results)
    summary["by_llm_size"] = {"tiny": summary["by_llm_size"]["a"]}
    report = report_markdown(summary)
    assert TINY_RATIOS_NOTE in report
    assert "per-execute IPC" in TINY_RATIOS_NOTE and "SmolLM-135M shape" in TINY_RATIOS_NOTE


def test_token_bound_uses_the_servers_miss_count():
    from larr.benchmarks.summary import measured_miss_tokens_per_request

    point = {"simulated": {"misses": 10, "miss_tokens_per_request": 4.0}, "cache": {"hits": 70, "misses": 30}}
    # the server (several LRUs) missed 3x as often as the one-cache replay: 3x the miss tokens
    assert measured_miss_tokens_per_request(point) == 12.0
    assert measured_miss_tokens_per_request({"simulated": {"misses": 0, "miss_tokens_per_request": 0.0}, "cache": None}) == 0.0
    assert measured_miss_tokens_per_request(None) is None


def test_token_bound_share_per_fresh_share(results):
    """The strict line's number: LARR's speed-up over full text at a share / the token bound of the same point.
    Size "b": LARR 250 req/s vs full text 100 at 10 % fresh; 30 full-text tokens per request against 5 miss tokens
    per replayed miss, and the server missed twice as often as the replay (2 vs 1): bound 30 / 10 = 3."""
    size = results["sizes"][1]
    larr = find_point(size["points"], LARR, "perf_analyzer", 16, 0.1)
    larr["simulated"] = {**larr["simulated"], "misses": 1}
    larr["cache"] = {"hits": 8, "misses": 2, "joined": 0, "hit_rate": 0.8}
    shares = build_summary(results)["token_bound_share_by_fresh_share"]
    assert shares["0.1"] == pytest.approx((250.0 / 100.0) / (30.0 / 10.0))
    assert shares["0.0"] is None and shares["0.5"] is None  # no replay behind those points: no bound


def test_repeats_give_the_mean_and_a_students_t_interval(results):
    """Three repeats of size "b" with different LARR speeds: every ratio is the mean of the per-repeat ratios,
    and ``_ci95`` is t(0.975, 2) * s / sqrt(3), checked against scipy and numpy."""
    from scipy import stats

    speeds = (2.0, 2.5, 3.4)
    repeated = []
    for repeat, speed in enumerate(speeds):
        for p in size_result("b", 135_000_000, speed)["points"]:
            repeated.append({**p, "repeat": repeat})
    results["sizes"][1]["points"] = repeated
    summary = build_summary(results)

    expected = np.array(speeds)  # LARR at 100 * speed req/s vs full-text 100 req/s
    half_width = stats.t.ppf(0.975, df=2) * expected.std(ddof=1) / np.sqrt(3)
    assert summary["repeats"] == 3
    assert summary["throughput_ratio_vs_fulltext"] == pytest.approx(expected.mean())
    assert summary["throughput_ratio_vs_fulltext_ci95"] == pytest.approx(half_width, rel=1e-3)
    assert summary["by_llm_size"]["b"]["throughput_ratio_vs_fulltext_repeats"] == pytest.approx(list(expected))
    # identical in every repeat: interval 0; measured once per size (saturation): no interval
    assert summary["p99_ratio_vs_fulltext_ci95"] == pytest.approx(0.0)
    assert summary["embedder_mfu_ci95"] is None
    # by fresh share: LARR at each share / full text at the headline share; the 0.1 share varies by repeat
    by_share = summary["throughput_ratio_vs_fulltext_by_fresh_share"]
    assert by_share == pytest.approx({"0.0": 3.0, "0.1": expected.mean(), "0.5": 0.2})
    assert summary["throughput_ratio_vs_fulltext_by_fresh_share_ci95"]["0.1"] == pytest.approx(half_width, rel=1e-3)
    # a single repeat has no interval
    assert summary["by_llm_size"]["a"]["repeats"] == 1
    assert summary["by_llm_size"]["a"]["throughput_ratio_vs_fulltext_ci95"] is None
    json.dumps(summary, allow_nan=False)


def test_mfu_uses_the_best_peak_measured_in_the_run(results):
    size = results["sizes"][1]
    size["saturation"]["gemm_peak_flops"] = 4e12  # measured next to the saturation run, 4x the run's first
    row = size_summary(size, 16, 0.1, gemm_peak_flops=1e12)
    assert row["embedder_mfu"] == pytest.approx(1000 * 2e8 / 4e12)
    size["saturation"]["gemm_peak_flops"] = 5e11  # lower: the first measurement stays the peak
    assert size_summary(size, 16, 0.1, gemm_peak_flops=1e12)["embedder_mfu"] == pytest.approx(1000 * 2e8 / 1e12)


def test_t_quantiles_match_scipy():
    from scipy import stats

    from larr.benchmarks.summary import t975

    for df in (1, 2, 3, 4, 9, 10, 20, 30):
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
    assert t975(12) >= stats.t.ppf(0.975, 12)  # between table rows: conservative
    with pytest.raises(ValueError):
        t975(0)


def test_int8_saturation_gives_tokens_per_s_and_the_mean_paired_speedup_over_rounds(results):
    """The int8 graph's tokens/s as measured, its speedup the mean of the per-round paired ratios with a
    Student's t interval over the rounds (not the ratio of totals), kept through the aggregation of repeats."""
    from scipy import stats

    rounds = [2.0, 2.6, 2.3, 2.9]
    results["sizes"][1]["saturation"]["int8"] = {"tokens_per_s": 2500.0, "speedup_by_round": rounds}
    summary = build_summary(results)
    assert summary["embedder_tokens_per_s_int8"] == 2500.0
    assert summary["embedder_int8_speedup"] == pytest.approx(np.mean(rounds))
    half_width = stats.t.ppf(0.975, df=3) * np.std(rounds, ddof=1) / 2
    assert summary["embedder_int8_speedup_ci95"] == pytest.approx(half_width, rel=1e-3)
    assert "embedder_int8_speedup_ci95_ci95" not in summary["by_llm_size"]["b"]
    # no int8 run (GPU, torch runtime): null, not zero
    del results["sizes"][1]["saturation"]["int8"]
    summary = build_summary(results)
    assert summary["embedder_tokens_per_s_int8"] is None and summary["embedder_int8_speedup"] is None
    json.dumps(summary, allow_nan=False)


def test_own_embedding_share_comes_from_the_deadline_counters():
    """fresh_text_policy deadline: 1 - deadline_fallbacks / misses over the point, from the server's counters;
    null where nothing missed; summary.json and points.csv carry it."""
    from larr.benchmarks.runner import _cache_delta

    before = {"hits_total": 10.0, "misses_total": 4.0, "deadline_fallbacks_total": 1.0}
    after = {"hits_total": 100.0, "misses_total": 24.0, "deadline_fallbacks_total": 6.0, "joined_total": 2.0}
    cache = _cache_delta(before, after)
    assert (cache["misses"], cache["deadline_fallbacks"], cache["joined"]) == (20, 5, 2)
    assert cache["own_embedding_share"] == pytest.approx(0.75)
    assert _cache_delta(None, {"hits_total": 5.0})["own_embedding_share"] is None  # nothing missed
    assert _cache_delta(None, {"misses_total": 3.0})["own_embedding_share"] == 1.0  # strict: no fallbacks counter

    size = size_result("x", 10, 2.0)
    larr = find_point(size["points"], LARR, "perf_analyzer", 16, 0.1)
    larr["cache"] = {**larr["cache"], "own_embedding_share": 0.75}
    summary = size_summary(size, 16, 0.1, None)
    assert summary["own_embedding_share"] == 0.75
