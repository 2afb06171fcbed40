"""Machine naming, the benchmark profiles and flags, and the runner's small helpers."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from larr.benchmarks import machine
from larr.benchmarks.cli import build_config, configure_bench_parser
from larr.benchmarks.config import LLM_SHAPES, PROFILES, QWEN25_05B, SMOLLM_135M, TINY, profile
from larr.benchmarks.models import BaseRun, size_run_dir
from larr.benchmarks.runner import Progress, sent_requests, window_requests

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu vme

processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
"""


def test_cpu_model_from_cpuinfo():
    assert machine.cpu_model_name(CPUINFO) == "AMD EPYC 7B13 64-Core Processor"
    assert machine.cpu_model_name("processor : 0\n")  # falls back to platform, never empty


@pytest.mark.parametrize(
    ("device", "cpu", "cores", "gpu", "expected"),
    [
        ("cpu", "AMD EPYC 7B13 64-Core Processor", 2, None, "cpu-2core-amd-epyc-7b13"),
        ("cpu", "AMD EPYC", 2, None, "cpu-2core-amd-epyc"),
        ("cpu", "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", 16, None, "cpu-16core-intel-xeon-platinum-8480"),
        ("cuda", "AMD EPYC 7B13 64-Core Processor", 16, "NVIDIA H100 80GB HBM3", "gpu-nvidia-h100-80gb-hbm3"),
    ],
)
def test_machine_names(device, cpu, cores, gpu, expected):
    assert machine.machine_name(device, cpu, cores, gpu) == expected


def test_machine_name_errors_and_slugs():
    with pytest.raises(ValueError, match="GPU"):
        machine.machine_name("cuda", "x", 1, None)
    assert machine.slug("  !!  ") == "unknown"
    assert machine.slug("NVIDIA GeForce RTX 4090", max_words=2) == "nvidia-geforce"


def test_device_resolution():
    assert machine.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError):
        machine.resolve_device("tpu")
    detected = machine.detect_machine("cpu")
    assert detected.device == "cpu" and detected.name.startswith(f"cpu-{detected.cores}core-")


def test_profiles_are_consistent():
    for name in PROFILES:
        config = profile(name)
        assert config.headline_size in config.llm_sizes
    full = profile("full")
    assert full.llm_sizes == (TINY, SMOLLM_135M, QWEN25_05B)
    assert (full.headline_size, full.headline_concurrency, full.headline_unseen) == (SMOLLM_135M, 16, 0.1)
    assert full.candidates == 100
    assert set(full.grid(TINY).unseen_shares) == {0.0, 0.1, 0.5}
    assert max(full.grid(TINY).concurrency) == 64


def test_profile_errors():
    with pytest.raises(ValueError, match="unknown profile"):
        profile("huge")
    with pytest.raises(ValueError, match="unknown LLM size"):
        profile("full", llm_sizes=("gpt-5",))
    with pytest.raises(ValueError, match="headline size"):
        profile("full", llm_sizes=(TINY,))
    grid = dataclasses.replace(PROFILES["smoke"].grid(TINY), concurrency=(4,))
    with pytest.raises(ValueError, match="concurrency 1"):
        profile("smoke", grids={TINY: grid})
    with pytest.raises(ValueError, match=r"embedder_width_ratio must be in \(0, 1\]"):
        profile("store", embedder_width_ratio=1.5)
    with pytest.raises(ValueError, match="random-weight sizes"):  # the trained tiny LM is distilled, not pruned here
        profile("smoke", embedder_width_ratio=0.5)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_bench_parser(parser)
    return parser.parse_args(list(argv))


def test_flags_build_the_config(tmp_path):
    config = build_config(parse("--profile", "quick", "--llm-sizes", "tiny", "--checkpoints", str(tmp_path),
                                "--skip", "fastapi", "--warmup", "5", "--candidates", "50"))
    assert config.llm_sizes == (TINY,)
    assert config.headline_size == TINY  # the profile's headline size was not measured: the largest one is
    assert config.skip == ("fastapi",) and config.warmup_requests == 5 and config.candidates == 50
    assert config.checkpoints == tmp_path


def test_repeats_and_the_fresh_text_policy_come_from_the_flags_or_the_profile(tmp_path):
    config = build_config(parse("--profile", "store", "--checkpoints", str(tmp_path)))
    assert config.repeats == PROFILES["store"].repeats == 3 and config.fresh_text_policy == "strict"
    config = build_config(parse("--profile", "smoke", "--repeats", "2", "--fresh-text-policy", "async"))
    assert config.repeats == 2 and config.fresh_text_policy == "async"
    config = build_config(parse("--profile", "smoke", "--fresh-text-policy", "deadline", "--miss-deadline-ms", "20"))
    assert (config.fresh_text_policy, config.miss_deadline_ms) == ("deadline", 20.0)


def test_a_stream_seed_moves_only_the_request_streams(tmp_path):
    published = build_config(parse("--profile", "store", "--repeats", "2"))
    # the default replays every published run's streams: model seed + repeat
    assert [published.stream_seed_of(r) for r in (0, 1)] == [published.seed, published.seed + 1] == [2024, 2025]
    rerun = build_config(parse("--profile", "store", "--repeats", "2", "--stream-seed", "7000"))
    assert [rerun.stream_seed_of(r) for r in (0, 1)] == [7000, 7001]
    assert rerun.seed == published.seed  # the random-weight models (and their exported folders) stay the same


def test_the_embedder_width_ratio_flag_reaches_the_config_and_its_own_folders(tmp_path):
    config = build_config(parse("--profile", "store", "--embedder-width-ratio", "0.5"))
    assert config.embedder_width_ratio == 0.5 and build_config(parse("--profile", "store")).embedder_width_ratio == 1.0
    shape, base = LLM_SHAPES[SMOLLM_135M], BaseRun(tmp_path / "trained", tmp_path / "data", 1, 1)
    assert size_run_dir(shape, base, tmp_path) == tmp_path.resolve() / "smollm-135m" / "run"  # today's folder
    assert size_run_dir(shape, base, tmp_path, 0.5) == tmp_path.resolve() / "smollm-135m-w0.5" / "run"
    with pytest.raises(ValueError, match="random-weight shapes"):
        size_run_dir(LLM_SHAPES[TINY], base, tmp_path, 0.5)


def test_help_renders():
    parser = argparse.ArgumentParser()
    configure_bench_parser(parser)
    text = parser.format_help()  # help strings are %-formatted: a bare '%' in one breaks --help
    assert "--repeats" in text and "95 %" in text


@pytest.mark.parametrize(
    "argv",
    [("--llm-sizes", "tiny,gpt-5"), ("--skip", "everything"), ("--warmup", "0"), ("--candidates", "0"),
     ("--repeats", "0")],
)
def test_bad_flags(argv):
    with pytest.raises(ValueError):
        build_config(parse(*argv))


def test_window_requests_bounds():
    grid = PROFILES["full"].grid(TINY)
    assert window_requests(300.0, grid, 1) == 400  # 300 req/s x 4 s over 3 windows
    assert window_requests(0.5, grid, 1) == grid.min_window
    assert window_requests(1e9, grid, 1) == grid.max_window
    assert window_requests(0.5, grid, 64) == 64  # never fewer than the concurrency


def test_sent_requests_cycle_when_perf_analyzer_wraps():
    assert sent_requests([1, 2, 3], 2) == [1, 2]
    assert sent_requests([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]
    with pytest.raises(ValueError):
        sent_requests([], 1)


def test_progress_estimates_time_left():
    lines: list[str] = []
    progress = Progress({"a": 10.0, "b": 20.0}, echo=lines.append)
    progress.task("a", "measuring a")
    progress.finish("a")
    progress.task("b", "measuring b")
    assert "measuring a" in lines[0] and "~0m30s left" in lines[0]
    assert "measuring b" in lines[1] and "left" in lines[1]
