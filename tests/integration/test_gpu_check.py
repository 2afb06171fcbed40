"""``benchmarks/gpu/gpu_check.sh`` in its reduced CPU form, so the GPU run cannot rot while no GPU is lent: the same
script and steps (no install, the tiny LLM instead of the 0.5B shape, ``--device cpu``, runtime torch from the
gpu profile, short points), on the session's tiny run. Checks what it writes, not how fast anything was."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gpu_check import device_description

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MAX_FILES_BACK = 8  # the device tool returns at most 8 files from $OUT


@pytest.fixture(scope="module")
def gpu_check(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_check")
    out, work = root / "out", root / "work"
    command = [
        "bash", str(ROOT / "benchmarks" / "gpu" / "gpu_check.sh"), "--no-install", "--device", "cpu", "--llm-size", "tiny",
        "--precompute-texts", "64", "--target-seconds", "0.5", "--checkpoints", str(tiny_run.run_dir),
        "--out", str(out), "--work", str(work),
    ]
    result = subprocess.run(command, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (machine_dir,) = (p for p in out.iterdir() if p.is_dir())
    return out, machine_dir, work


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_what_comes_back_fits_the_device_tool(gpu_check):
    out, machine_dir, _ = gpu_check
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(files) <= MAX_FILES_BACK, files
    names = {Path(f).name for f in files}
    assert names >= {"gpu_check.log", "README.md", "precompute.json", "results.json", "summary.json", "points.csv"}
    assert machine_dir.name.startswith("cpu-")


def test_the_precompute_is_measured_against_a_peak_of_the_same_run(gpu_check):
    _, machine_dir, _ = gpu_check
    record = json.loads((machine_dir / "precompute.json").read_text(encoding="utf-8"))
    assert record["llm_size"] == "tiny" and record["precision"] == "fp32" and record["machine"]["device"] == "cpu"
    for key in ("tokens_per_s", "texts_per_s", "peak_flops", "mfu", "seconds"):
        assert _finite(record[key]) and record[key] > 0, key
    assert record["fresh_texts"] >= 64 and record["texts"] > record["fresh_texts"]  # the dataset's texts too
    assert record["mfu"] == pytest.approx(record["model_flops"] / record["seconds"] / record["peak_flops"])
    # the second build (--compile) embeds the same texts: the same tokens and FLOPs, its own time and peak
    assert record["torch_compile"] is False
    compiled = record["compiled"]
    assert compiled["torch_compile"] is True and compiled["label"] == record["label"]
    for key in ("texts", "tokens", "fresh_texts"):
        assert compiled[key] == record[key], key
    assert compiled["model_flops"] == pytest.approx(record["model_flops"], rel=1e-12)
    assert compiled["mfu"] == pytest.approx(compiled["model_flops"] / compiled["seconds"] / compiled["peak_flops"])


def test_the_ensemble_and_the_baseline_are_served_by_torch_at_both_fresh_shares(gpu_check):
    _, machine_dir, work = gpu_check
    results = json.loads((machine_dir / "results.json").read_text(encoding="utf-8"))
    assert results["config"]["runtime"] == "torch"
    summary = json.loads((machine_dir / "summary.json").read_text(encoding="utf-8"))
    by_share = summary["throughput_ratio_vs_fulltext_by_fresh_share"]
    assert set(by_share) == {"0.01", "0.1"} and all(_finite(v) and v > 0 for v in by_share.values())
    for key in ("larr_throughput", "fulltext_throughput", "larr_p99_ms", "fulltext_p99_ms", "throughput_ratio_vs_fulltext"):
        assert _finite(summary[key]) and summary[key] > 0, key
    # the baseline's embedder is the larr repository's own model: PyTorch, not ONNX Runtime
    repos = work / "bench" / "tiny" / "repos"
    for name in ("larr", "fulltext"):
        assert 'string_value: "torch"' in (repos / name / "embedder" / "config.pbtxt").read_text(encoding="utf-8")
    assert (repos / "fulltext" / "fulltext_ctr" / "1" / "torch" / "serving.json").exists()


def test_the_readme_names_the_device_and_every_step(gpu_check):
    _, machine_dir, _ = gpu_check
    text = (machine_dir / "README.md").read_text(encoding="utf-8")
    assert device_description() in text
    for step in ("setup", "precompute", "serve"):
        assert f"| {step} |" in text
    assert "No result" not in text and "| 1% |" in text and "| 10% |" in text
    assert "| eager (the default) |" in text and "| `--compile` (each layer) |" in text
