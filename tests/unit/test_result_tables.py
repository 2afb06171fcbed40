"""The result tables, rendered from hand-built results and checked against numbers computed here independently
(NumPy for means and standard deviations, SciPy's t quantile for the intervals)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from larr.result_tables.frappe import (
    companions_frappe_table,
    frappe_deepfm_table,
    frappe_finalmlp_table,
    replication_groups_table,
)
from larr.result_tables.serving import demo_timings_table, scale_build_table, scale_load_table, serving_cpu_table, soak_table
from larr.result_tables.sources import ResultsError, Source, read_source, source_line
from larr.result_tables.synthetic import synthetic_ablation_table

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


LARR = [0.9866, 0.9870, 0.9852, 0.9861, 0.9860, 0.9865]  # three groups (stages-1/2 seeds) of two stage-3 seeds
GAPS = [0.0016, 0.0012, -0.0006, 0.0004, 0.0010, 0.0008]


def frappe_summary(**stored) -> Source:
    groups = [{"llm_seed": seed, "stage3_seeds": [seed + 1000, seed + 2000], "larr_auc": LARR[i:i + 2],
               "gaps": GAPS[i:i + 2]} for seed, i in ((1, 0), (2, 2), (3, 4))]
    return Source("frappe/summary.json", {"llm_seeds": groups, "target": 0.9861, "results_commit": COMMIT, **stored})


def frappe_groups(summary: Source) -> list[Source]:
    """Each group's results file: its ID-only runs (LARR − gap) and the published board."""
    return [Source(f"frappe/g{g['llm_seed']}.json", {
        "per_seed": {"id_only": {str(s): {"auc": a - d} for s, a, d in zip(g["stage3_seeds"], g["larr_auc"], g["gaps"])}},
        "bars_frappe_x1": {"FinalMLP": {"auc": 0.9861, "logloss": 0.1484}}}) for g in summary.data["llm_seeds"]]


def group_means(values: list[float]) -> list[float]:
    return [float(np.mean(values[i:i + 2])) for i in (0, 2, 4)]


def test_frappe_finalmlp_gives_both_models_the_paired_gap_and_its_interval_over_groups() -> None:
    summary = frappe_summary()
    table = frappe_finalmlp_table(summary, frappe_groups(summary))
    id_only = [a - g for a, g in zip(LARR, GAPS)]
    got = list(rows(table).values())
    assert got[0][:2] == [f"{np.mean(LARR):.4f} ± {np.std(LARR, ddof=1):.4f}", "6"]
    low, high = interval(group_means(GAPS))
    assert got[0][2:] == [f"+{np.mean(GAPS):.4f} [{low:+.4f}, {high:+.4f}]".replace("-", "−"), "5 of 6"]
    assert got[1][:2] == [f"{np.mean(id_only):.4f} ± {np.std(id_only, ddof=1):.4f}", "6"]
    assert got[2][:2] == ["0.9861", "1"]
    low, high = interval(group_means(LARR))
    assert f"(t, df 2): [{low:.4f}, {high:.4f}]" in table
    assert "`frappe/summary.json` and the 3 groups' `results.json` beside it, results committed at `0123456`" in table


def test_frappe_finalmlp_refuses_results_that_disagree_with_the_summary() -> None:
    summary = frappe_summary(gap_mean=float(np.mean(group_means(GAPS))))
    frappe_finalmlp_table(summary, frappe_groups(summary))
    with pytest.raises(ResultsError, match="gap_mean is 0.002"):
        frappe_finalmlp_table(frappe_summary(gap_mean=0.002), frappe_groups(summary))
    groups = frappe_groups(summary)
    groups[1].data["per_seed"]["id_only"]["1002"]["auc"] += 0.001
    with pytest.raises(ResultsError, match="ID-only seed 1002"):
        frappe_finalmlp_table(summary, groups)


def test_replication_groups_list_each_group_and_the_two_intervals() -> None:
    table = replication_groups_table(frappe_summary())
    got = rows(table)
    assert got["2"] == ["1002, 2002", f"{np.mean(LARR[2:4]):.4f}", f"{np.mean(GAPS[2:4]):+.4f}".replace("-", "−"), "1 of 2"]
    low, high = interval(group_means(GAPS))
    assert f"[{low:+.4f}, {high:+.4f}]".replace("-", "−") in table
    stage3_low, stage3_high = interval(GAPS)
    assert f"±{(stage3_high - stage3_low) / 2:.4f}" in table


def frappe_results(per_seed: dict[str, dict[str, float]]) -> Source:
    return Source("frappe/opt.json", {"per_seed": {"larr": {s: {"auc": a} for s, a in per_seed.items()}},
                                      "results_commit": COMMIT})


def test_companions_on_frappe_pair_each_seed_with_the_baseline_run_of_that_seed() -> None:
    baseline = frappe_results({"2021": 0.9850, "2022": 0.9855, "2023": 0.9845, "2024": 0.9990})
    option = frappe_results({"2021": 0.9856, "2022": 0.9853, "2023": 0.9849})
    deltas = [0.0006, -0.0002, 0.0004]
    got = rows(companions_frappe_table(baseline, [("an option", option)]))
    aucs = [0.9856, 0.9853, 0.9849]
    assert got["an option"] == [f"{np.mean(aucs):.4f} ± {np.std(aucs, ddof=1):.4f}",
                                f"+{np.mean(deltas):.4f} ± {np.std(deltas, ddof=1):.4f} (2 of 3)"]
    with pytest.raises(ResultsError, match="no LARR run"):
        companions_frappe_table(frappe_results({"2021": 0.98}), [("an option", option)])


def test_deepfm_lists_each_variant_then_the_board_naming_its_best_rows() -> None:
    variant = {"auc": {"mean": 0.98523, "std": 0.00061}, "logloss": {"mean": 0.15381, "std": 0.006}}
    results = Source("deepfm.json", {
        "summary": {"variants": {"id_only": variant, "larr": variant},
                    "auc_gaps": {"larr": {"paired_gap_mean": 0.000704, "paired_gap_std": 0.00048, "seeds_ahead": 5,
                                          "seeds_paired": 5}}},
        "bars_deepfm_5_seeds": {"auc": 0.983947, "auc_std": 0.00016, "logloss": 0.149462, "logloss_std": 0.0018},
        "results_commit": COMMIT})
    board = Source("board.json", {"bars_frappe_x1": {"DCN-V2": {"auc": 0.9845, "logloss": 0.1491},
                                                    "FinalMLP": {"auc": 0.9861, "logloss": 0.1484},
                                                    "FinalNet": {"auc": 0.9857, "logloss": 0.1311},
                                                    "DESTINE": {"auc": 0.9856, "logloss": 0.1434}}})
    got = rows(frappe_deepfm_table(results, board))
    assert got["ID-only backbone (our DeepFM)"] == ["0.9852 ± 0.0006", "0.1538 ± 0.0060", "–", ""]
    assert got["LARR (stage-2 embedder, per-feature scene → aggregation + alignment, item text)"][2:] == [
        "+0.0007 ± 0.0005", "5 of 5"]
    assert got["BARS DeepFM, 5 seeds (published)"][:2] == ["0.9839 ± 0.0002", "0.1495 ± 0.0018"]
    assert "BARS FinalMLP, best AUC on the board (published)" in got
    assert "BARS FinalNet, best logloss on the board (published)" in got


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
    metrics = Source("metrics.json", {"ctr": ctr})
    table = synthetic_ablation_table(run, metrics)
    got = rows(table)
    assert list(got) == ["`larr`", "`id_only`", "`no_stage2`", "`full_text`"]
    assert got["`larr`"] == ["0.7251", "+0.0551"]
    assert got["`id_only`"] == ["0.6700", "0"]
    assert got["`no_stage2`"] == ["0.6600", "−0.0100"]
    assert "`metrics.json` and `run.json`, ran at commit `0123456`" in table
    assert rows(synthetic_ablation_table(run, metrics, full=True))["`larr`"] == [
        "0.7251", "+0.0551", "0.6097", "0.7188", "0.7930"]
    assert "seed 2024" in table


def test_serving_cpu_gives_each_llm_size_its_ratios_and_triton_over_fastapi_from_the_like_for_like_run() -> None:
    size = {"label": "SmolLM-135M shape, random weights", "parameters": 134_884_288, "throughput_ratio_vs_fulltext": 1.5658,
            "token_bound_vs_fulltext": 2.3268, "p99_ratio_vs_fulltext": 0.8394, "throughput_ratio_vs_cache_off": 3.0778,
            "cache_hit_rate": 0.7672}
    headline = {"llm_size": "smollm-135m", "label": "SmolLM-135M shape", "concurrency": 16, "unseen_share": 0.1}
    summary = Source("summary.json", {"by_llm_size": {"smollm-135m": size}, "headline": headline,
                                      "hardware": {"name": "cpu-2core-x"}, "started": "2026-11-23", "code_commit": COMMIT})
    fastapi = Source("fastapi.json", {
        "by_llm_size": {"smollm-135m": {"repeats": 2, "throughput_ratio_vs_fastapi_repeats": [1.5182, 1.3546],
                                        "p99_ratio_vs_fastapi_repeats": [2.5045, 2.6130]}},
        "headline": {**headline, "unseen_share": 0.01}, "machine": "cpu-2core-x", "started": "2026-11-30",
        "results_commit": COMMIT})
    table = serving_cpu_table(summary, fastapi)
    assert rows(table)["SmolLM-135M shape (134.9M)"] == ["1.57×", "2.33×", "0.84", "3.08×", "77 %"]
    assert "1 % fresh texts, 2 repeats): **1.52× and 1.35×** the requests/s, with a p99 2.50× and 2.61×" in table
    assert "`summary.json`, ran at commit `0123456`" in table and "`fastapi.json`, results committed at `0123456`" in table


def test_a_line_over_files_of_different_commits_names_each() -> None:
    a, b = Source("a.json", {"code_commit": "a" * 40}), Source("b.json", {"results_commit": "b" * 40})
    assert source_line(a, Source("m.json", {})) == "<sub>Rendered by `larr docs render` from `a.json` and `m.json`, ran at commit `aaaaaaa`.</sub>"
    assert source_line(a, b) == ("<sub>Rendered by `larr docs render` from `a.json` (ran at commit `aaaaaaa`); `b.json` "
                                 "(results committed at `bbbbbbb`).</sub>")
    with pytest.raises(ResultsError, match="m.json records no commit"):
        source_line(Source("m.json", {}))


def test_soak_reports_errors_latency_rss_growth_and_the_load_it_ran_under() -> None:
    mib = 1024 * 1024
    soak = Source("soak.json", {
        "config": {"concurrency": 64, "fresh_share": 0.1, "candidates": 20, "max_rss_growth": 0.05},
        "command": "larr soak ...", "machine": {"name": "cpu-2core-x", "cpu_model": "X", "cores": 2},
        "totals": {"requests": 704_822, "error_count": 0, "seconds": 600.02, "throughput": 1174.66, "p50_ms": 45.75,
                   "p99_ms": 156.64, "stub_restarts": {"embedder": 0, "ctr": 1}},
        "rss": {"baseline_bytes": 300 * mib, "peak_bytes": 309 * mib, "growth": 0.03},
        "windows": [{"load_1min": 8.0}, {"load_1min": 11.0}, {"load_1min": 11.0}],
        "passed": True, "failures": [], "code_commit": COMMIT})
    (got,) = rows(soak_table(soak)).items()
    assert list(got[:1]) == ["704,822 in 600 s"]
    assert got[1] == ["0", "1,174.7", "45.8 ms", "156.6 ms", "300.0 → 309.0 MiB (+3.0 %, bound 5 %)", "1", "passed",
                      "8.0–11.0 (mean 10.0)"]


def test_demo_timings_give_each_step_in_the_order_it_ran() -> None:
    timings = Source("timings.json", {
        "command": "larr demo --config quick --out runs/demo", "code_commit": COMMIT, "started": "2026-12-07T23:00:00",
        "machine": {"name": "cpu-2core-x", "cpu_model": "X", "cores": 2}, "load_average_start": 0.24, "load_average_end": 1.5,
        "step_seconds": {"data": 14.6, "training": 95.0, "export": 6.2, "serving": 2.0, "querying": 1.4,
                         "benchmark": 66.0},
        "first_answer_seconds": 155.3, "total_seconds": 185.2})
    got = rows(demo_timings_table(timings))
    assert list(got)[:6] == ["data", "training", "export", "serving", "querying", "benchmark"]
    assert got["data"] == ["15 s"] and got["training"] == ["1 min 35 s"]
    assert got["first served answer (since the start)"] == ["2 min 35 s"]
    assert got["total"] == ["3 min 05 s"]


def scale_results(ratio: float | None = None) -> Source:
    runs = {"local": {"texts": 100, "seconds": 10.0, "texts_per_s": 10.0, "rows": 100},
            "ray, 1 worker": {"texts": 100, "seconds": 4.0, "texts_per_s": 25.0, "rows": 100},
            "ray, 2 workers": {"texts": 100, "seconds": 2.5, "texts_per_s": 40.0, "rows": 100}}
    return Source("scale.json", {
        "machine": {"shared": "load 1-2"}, "code_commit": COMMIT,
        "build": {"repeats": 1, "note": "one run each", "runs": runs, "ray_2_over_1_workers": ratio if ratio else 40 / 25},
        "load_store": {"code_commit": COMMIT, "rows": 1000, "batch_size": 100,
                       "runs": {"one node": [{"rows_per_s": r} for r in (300.0, 100.0, 200.0, 400.0)]}}})


def test_scale_tables_give_the_worker_ratio_and_the_median_load_rate() -> None:
    build = scale_build_table(scale_results())
    assert rows(build)["ray, 2 workers"] == ["2.5", "40", "100"]
    assert f"**{40 / 25:.2f}×**" in build
    with pytest.raises(ResultsError, match="ray_2_over_1_workers"):
        scale_build_table(scale_results(ratio=2.0))  # a stored ratio its own runs do not give
    load = rows(scale_load_table(scale_results()))
    assert load["one node"] == [f"{np.median([300, 100, 200, 400]):,.0f}", "100–400", "4"]
