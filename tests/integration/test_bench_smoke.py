"""``larr bench --profile smoke`` end to end on the session's tiny run: real tritonserver, perf_analyzer,
the FastAPI service, the plots. The smallest grid (tiny model only, concurrency 1 and 4, about a
second per point); the numbers themselves are not checked, only that every part measured something
consistent and the outputs are complete."""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest

from larr.benchmarks.cli import configure_bench_parser, run_bench
from larr.benchmarks.config import CACHE_OFF, FASTAPI, FULLTEXT, INPROCESS, LARR, LARR_LOADGEN
from larr.benchmarks.summary import HEADLINE_KEYS

pytestmark = pytest.mark.integration


REPEATS = 2  # the smallest number with an interval
STREAM_SEED = 7000  # not the model seed: the streams of repeat r are seeded STREAM_SEED + r


@pytest.fixture(scope="module")
def bench(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    parser = argparse.ArgumentParser()
    configure_bench_parser(parser)
    args = parser.parse_args([
        "--profile", "smoke", "--device", "cpu", "--checkpoints", str(tiny_run.run_dir),
        "--out", str(root / "results"), "--work", str(root / "work"), "--repeats", str(REPEATS),
        "--stream-seed", str(STREAM_SEED),
    ])
    assert run_bench(args) == 0
    (machine_dir,) = (root / "results").iterdir()
    return machine_dir


def test_every_ratio_is_a_mean_over_repeats_with_an_interval(bench):
    results = json.loads((bench / "results.json").read_text(encoding="utf-8"))
    (size,) = results["sizes"]
    assert {p["repeat"] for p in size["points"]} == set(range(REPEATS))
    assert results["config"]["stream_seed"] == STREAM_SEED and results["config"]["seed"] == 2024  # models unchanged
    assert {key.split("/")[0] for key in size["segments"]} == {f"r{r}" for r in range(REPEATS)}
    summary = json.loads((bench / "summary.json").read_text(encoding="utf-8"))
    assert summary["repeats"] == REPEATS
    row = summary["by_llm_size"]["tiny"]
    for key in ("throughput_ratio_vs_fulltext", "p99_ratio_vs_fulltext", "throughput_ratio_vs_cache_off"):
        values = row[f"{key}_repeats"]
        assert len(values) == REPEATS and row[key] == pytest.approx(sum(values) / REPEATS)
        assert isinstance(summary[f"{key}_ci95"], float) and summary[f"{key}_ci95"] >= 0.0
    assert set(summary["throughput_ratio_vs_fulltext_by_fresh_share"]) == {"0.1"}


def test_summary_has_every_headline_number(bench, tiny_run):
    summary = json.loads((bench / "summary.json").read_text(encoding="utf-8"))
    assert summary["headline"]["llm_size"] == "tiny"
    assert set(summary["by_llm_size"]) == {"tiny"}
    for key in HEADLINE_KEYS:
        value = summary[key]
        assert isinstance(value, float) and math.isfinite(value), (key, value)
        assert summary["by_llm_size"]["tiny"][key] == value
    assert 0.0 < summary["cache_hit_rate"] < 1.0
    assert 0.0 < summary["embedder_mfu"] < 1.0
    assert summary["token_bound_vs_fulltext"] > 1.0  # a whole scene has more tokens than the cache misses
    # without a trained full-text head in the run, a random one is measured, and the summary says so
    trained = (tiny_run.ctr_dir("full_text") / "ctr.json").exists()
    assert ("trained" if trained else "random") in summary["by_llm_size"]["tiny"]["models"]["fulltext_ctr"]


def test_the_int8_embedder_ran_interleaved_with_fp32_on_the_same_batches(bench):
    """On CPU + ONNX Runtime the saturation run also times the int8 conversion of the served embedder: a
    quantised graph (integer MatMuls), on the same batches, its speedup the mean of the paired rounds."""
    import onnx

    results = json.loads((bench / "results.json").read_text(encoding="utf-8"))
    saturation = results["sizes"][0]["saturation"]
    int8 = saturation["int8"]
    ops = {node.op_type for node in onnx.load(int8["graph"], load_external_data=False).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert int8["batch"] == saturation["batch"]
    assert len(int8["speedup_by_round"]) == saturation["rounds"]
    summary = json.loads((bench / "summary.json").read_text(encoding="utf-8"))
    assert summary["embedder_tokens_per_s_int8"] == pytest.approx(int8["tokens"] / int8["seconds"])
    assert summary["embedder_int8_speedup"] == pytest.approx(sum(int8["speedup_by_round"]) / saturation["rounds"])


def test_every_variant_was_measured_on_what_was_sent(bench):
    results = json.loads((bench / "results.json").read_text(encoding="utf-8"))
    (size,) = results["sizes"]
    measured = {(p["variant"], p["method"], p["concurrency"]) for p in size["points"]}
    assert measured >= {
        (LARR, "perf_analyzer", 1), (LARR, "perf_analyzer", 4), (CACHE_OFF, "perf_analyzer", 4),
        (FULLTEXT, "perf_analyzer", 4), (INPROCESS, "inprocess", 1), (INPROCESS, "inprocess", 4),
        (FASTAPI, "loadgen", 4), (LARR_LOADGEN, "loadgen", 4),
    }
    for point in size["points"]:
        assert point["requests"] > 0 and point["throughput"] > 0 and point["p99_us"] >= point["p50_us"] > 0
        if point["method"] == "perf_analyzer" and point["variant"] in (LARR, CACHE_OFF):
            # the replay of the requests perf_analyzer sent through ONE cache bounds the server's own hit rate
            # (its feature_cache instances each keep an LRU); the server must still serve repeats from cache
            assert point["cache"]["hit_rate"] <= point["simulated"]["hit_rate"] + 0.03
            if point["variant"] == LARR:
                assert point["cache"]["hit_rate"] > 0.2
            embedder = point["breakdown"]["embedder"]
            assert embedder["requests"] > 0 and embedder["avg_batch"] >= 1.0
        if point["variant"] == CACHE_OFF:
            assert point["cache"]["hits"] == 0


def test_tables_plots_and_report(bench):
    with open(bench / "points.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["variant"] for r in rows} == {LARR, CACHE_OFF, FULLTEXT, INPROCESS, FASTAPI, LARR_LOADGEN}
    with open(bench / "breakdown.csv", newline="", encoding="utf-8") as handle:
        models = {r["model"] for r in csv.DictReader(handle)}
    assert {"larr", "feature_cache", "embedder", "ctr", "larr_fulltext", "fulltext_embed", "fulltext_ctr"} <= models
    for name in ("throughput_vs_p99.png", "speedup_vs_llm_size.png", "cache_hit_rate_vs_unseen.png"):
        assert (bench / name).read_bytes()[:4] == b"\x89PNG"
    report = (bench / "report.md").read_text(encoding="utf-8")
    assert "| tiny: " in report and "throughput_vs_p99.png" in report
