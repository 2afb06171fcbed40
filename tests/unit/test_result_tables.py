"""The result tables, rendered from hand-built results and checked against numbers computed here independently
(NumPy for means and standard deviations, SciPy's t quantile for the intervals)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from larr.result_tables import (
    ResultsError,
    Source,
    demo_timings_table,
    frappe_finalmlp_table,
    read_source,
    serving_cpu_table,
    soak_table,
    synthetic_ablation_table,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def rows(markdown: str) -> dict[str, list[str]]:
    """A table's body rows by their first cell (stripped of markdown emphasis)."""
    body = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    cells = [[c.strip().replace("**", "") for c in line.strip("|").split("|")] for line in body]
    return {c[0]: c[1:] for c in cells}


def interval(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def test_a_table_names_the_commit_its_results_ran_at_or_were_committed_at() -> None:
    assert Source("a.json", {"code_commit": COMMIT}).commit_phrase() == "ran at commit `0123456`"
    assert Source("a.json", {"code_commit": COMMIT + "-dirty"}).commit_phrase() == "ran at commit `0123456-dirty`"
    assert Source("a.json", {"results_commit": COMMIT}).commit_phrase() == "results committed at `0123456`"
    with pytest.raises(ResultsError, match="a.json records no commit"):
        Source("a.json", {}).commit_phrase()


def test_a_missing_or_broken_results_file_is_an_error_not_a_table(tmp_path) -> None:
    with pytest.raises(ResultsError, match="missing"):
        read_source(tmp_path, "no/such.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(ResultsError, match="not JSON"):
        read_source(tmp_path, "bad.json")
    (tmp_path / "good.json").write_text(json.dumps({"x": 1}), encoding="utf-8")
    assert read_source(tmp_path, "good.json") == Source("good.json", {"x": 1})


def frappe_summary(**stored) -> Source:
    groups = [
        {"llm_seed": 1, "larr_auc": [0.9866, 0.9870], "gaps": [0.0016, 0.0012]},
        {"llm_seed": 2, "larr_auc": [0.9852, 0.9861], "gaps": [-0.0006, 0.0004]},
        {"llm_seed": 3, "larr_auc": [0.9860, 0.9865], "gaps": [0.0010, 0.0008]},
    ]
    return Source("frappe/summary.json", {"llm_seeds": groups, "target": 0.9861, "results_commit": COMMIT, **stored})


def test_frappe_finalmlp_gives_both_models_the_paired_gap_and_the_interval_over_groups() -> None:
    table = frappe_finalmlp_table(frappe_summary())
    larr = [0.9866, 0.9870, 0.9852, 0.9861, 0.9860, 0.9865]
    gaps = [0.0016, 0.0012, -0.0006, 0.0004, 0.0010, 0.0008]
    id_only = [a - g for a, g in zip(larr, gaps)]
    group_mean = lambda values: [np.mean(values[i:i + 2]) for i in (0, 2, 4)]  # noqa: E731

    got = rows(table)
    assert got["LARR on FinalMLP"][0] == f"{np.mean(larr):.4f} ± {np.std(larr, ddof=1):.4f}"
    low, high = interval(group_mean(larr))
    assert got["LARR on FinalMLP"][1] == f"[{low:.4f}, {high:.4f}]"
    assert got["LARR on FinalMLP"][2] == "6 (3 stages-1/2 seeds × 2 stage-3 seeds)"
    assert got["our ID-only FinalMLP"][0] == f"{np.mean(id_only):.4f} ± {np.std(id_only, ddof=1):.4f}"
    low, high = interval(group_mean(gaps))
    gap = got["paired gap, LARR − ID-only"]
    assert gap[0] == f"+{np.mean(gaps):.4f} ± {np.std(gaps, ddof=1):.4f}"
    assert gap[1] == f"[{low:+.4f}, {high:+.4f}]".replace("-", "−")
    assert gap[2] == "ahead in 5 of 6 pairs"
    assert got["BARS FinalMLP (published)"][0] == "0.9861"
    assert "`frappe/summary.json`, results committed at `0123456`" in table


def test_frappe_finalmlp_refuses_a_summary_whose_stored_gap_its_runs_do_not_give() -> None:
    frappe_finalmlp_table(frappe_summary(gap_mean=float(np.mean([0.0014, -0.0001, 0.0009]))))
    with pytest.raises(ResultsError, match="gap_mean is 0.002"):
        frappe_finalmlp_table(frappe_summary(gap_mean=0.002))


def test_synthetic_ablation_lists_larr_and_id_only_first_with_the_gap_to_id_only() -> None:
    ctr = {
        "full_text": {"auc": 0.73, "logloss": 0.61, "gauc": 0.72, "best_valid_auc": 0.80},
        "id_only": {"auc": 0.67, "logloss": 0.64, "gauc": 0.66, "best_valid_auc": 0.71},
        "larr": {"auc": 0.7251, "logloss": 0.6097, "gauc": 0.7188, "best_valid_auc": 0.7930},
        "no_stage2": {"auc": 0.66, "logloss": 0.65, "gauc": 0.65, "best_valid_auc": 0.70},
        "wall_seconds": 99.0,
    }
    run = Source("run.json", {"command": "larr train all --config tiny", "seed": 2024, "code_commit": COMMIT,
                              "machine": {"name": "cpu-2core-x"}})
    table = synthetic_ablation_table(run, Source("metrics.json", {"ctr": ctr}))
    got = rows(table)
    assert list(got) == ["`larr`", "`id_only`", "`no_stage2`", "`full_text`"]
    assert got["`larr`"] == ["0.7251", "+0.0551", "0.6097", "0.7188", "0.7930"]
    assert got["`id_only`"][1] == "0"
    assert got["`no_stage2`"][1] == "−0.0100"
    assert "`metrics.json` and `run.json`, ran at commit `0123456`" in table
    assert "seed 2024" in table


def test_serving_cpu_gives_each_llm_size_its_ratios() -> None:
    size = {"label": "SmolLM-135M shape", "parameters": 134_884_288, "throughput_ratio_vs_fulltext": 1.5658,
            "token_bound_vs_fulltext": 2.3268, "p99_ratio_vs_fulltext": 0.8394, "throughput_ratio_vs_cache_off": 3.0778,
            "cache_hit_rate": 0.7672, "throughput_ratio_vs_fastapi": 1.8784, "embedder_mfu": 0.3904}
    summary = Source("summary.json", {
        "by_llm_size": {"smollm-135m": size}, "headline": {"concurrency": 16, "unseen_share": 0.1},
        "hardware": {"name": "cpu-2core-x", "cpu_model": "X", "cores": 2}, "started": "2026-11-23",
        "results_commit": COMMIT})
    table = serving_cpu_table(summary)
    assert rows(table)["SmolLM-135M shape"] == ["134.9M", "1.57×", "2.33×", "0.84", "3.08×", "77%", "1.9×", "39%"]
    assert "concurrency 16, 10% never-seen scene texts" in table


def test_soak_reports_errors_latency_and_rss_growth() -> None:
    mib = 1024 * 1024
    soak = Source("soak.json", {
        "config": {"concurrency": 64, "fresh_share": 0.1, "candidates": 20, "max_rss_growth": 0.05},
        "command": "larr soak ...", "machine": {"name": "cpu-2core-x", "cpu_model": "X", "cores": 2},
        "totals": {"requests": 704_822, "error_count": 0, "seconds": 600.02, "throughput": 1174.66, "p50_ms": 45.75,
                   "p99_ms": 156.64, "stub_restarts": {"embedder": 0, "ctr": 1}},
        "rss": {"baseline_bytes": 300 * mib, "peak_bytes": 309 * mib, "growth": 0.03},
        "passed": True, "failures": [], "code_commit": COMMIT})
    got = rows(soak_table(soak))
    assert got["requests, errors"] == ["704,822, 0 errors"]
    assert got["latency p50 / p99"] == ["45.8 / 156.6 ms"]
    assert got["stub restarts"] == ["1"]
    assert got["RSS after warm-up → peak (growth, bound)"] == ["300.0 → 309.0 MiB (+3.0 %, bound 5 %)"]
    assert got["verdict"] == ["passed"]


def test_demo_timings_give_each_step_in_the_order_it_ran() -> None:
    timings = Source("timings.json", {
        "command": "larr demo --config quick --out runs/demo", "code_commit": COMMIT, "started": "2026-12-07T23:00:00",
        "machine": {"name": "cpu-2core-x", "cpu_model": "X", "cores": 2}, "load_average_start": 0.24,
        "step_seconds": {"data": 14.6, "training": 95.0, "export": 6.2, "serving": 2.0, "querying": 1.4,
                         "benchmark": 66.0},
        "first_answer_seconds": 155.3, "total_seconds": 185.2})
    got = rows(demo_timings_table(timings))
    assert list(got)[:6] == ["data", "training", "export", "serving", "querying", "benchmark"]
    assert got["data"] == ["15 s"] and got["training"] == ["1 min 35 s"]
    assert got["first served answer (since the start)"] == ["2 min 35 s"]
    assert got["total"] == ["3 min 05 s"]
