"""The GPU run's pieces that need no GPU: the gpu profile, the runtime flag, the wheel slimming, the report."""

from __future__ import annotations

import argparse
import stat
import zipfile

import pytest
from carry_wheels import slim_wheel, unused_of
from gpu_check import Step, read_steps, write_readme

from larr.benchmarks import runner
from larr.benchmarks.cli import build_config, configure_bench_parser
from larr.benchmarks.config import LLM_SHAPES, QWEN25_05B, SMOLLM_135M, TINY, profile
from larr.benchmarks.machine import Machine
from larr.benchmarks.models import BenchSetupError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_bench_parser(parser)
    return parser.parse_args(list(argv))


def test_the_gpu_profile_is_what_issue_13_asks():
    config = profile("gpu")
    assert config.llm_sizes == (QWEN25_05B,) and config.headline_size == QWEN25_05B
    shape = LLM_SHAPES[QWEN25_05B]
    assert (shape.architecture, shape.hidden_size, shape.num_hidden_layers, shape.intermediate_size) == ("qwen2", 896, 24, 4864)
    assert (config.runtime, config.device) == ("torch", "cuda")
    assert config.headline_concurrency == 16 and config.headline_unseen == 0.1
    grid = config.grid(QWEN25_05B)
    assert set(grid.unseen_shares) == {0.01, 0.1}
    assert 16 in grid.share_concurrency and 16 in grid.baseline_concurrency
    assert config.repeats == 1  # two do not fit in the 8 minutes (config.py says why)


def test_runtime_device_and_skip_come_from_the_profile_unless_given(tmp_path):
    config = build_config(parse("--profile", "gpu", "--checkpoints", str(tmp_path)))
    assert (config.runtime, config.device) == ("torch", "cuda")
    assert set(config.skip) == {"fastapi", "inprocess", "saturation"}
    config = build_config(parse("--profile", "gpu", "--runtime", "onnxruntime", "--device", "cpu", "--skip", ""))
    assert (config.runtime, config.device, config.skip) == ("onnxruntime", "cpu", ())
    config = build_config(parse("--profile", "smoke"))
    assert (config.runtime, config.device, config.skip) == ("onnxruntime", "auto", ())
    with pytest.raises(ValueError, match="runtime"):
        profile("smoke", runtime="tensorrt")


def test_headline_concurrency_replaces_the_profiles_level_in_every_sweep_and_keeps_concurrency_1():
    config = build_config(parse("--profile", "store", "--headline-concurrency", "64"))
    grid = config.grid(SMOLLM_135M)
    assert config.headline_concurrency == 64
    assert (grid.concurrency, grid.baseline_concurrency, grid.share_concurrency, grid.loadgen_concurrency) == (
        (1, 64), (1, 64), (64,), (64,))
    assert build_config(parse("--profile", "store")).grid(SMOLLM_135M).concurrency == (1, 16)
    full = build_config(parse("--profile", "full", "--headline-concurrency", "32")).grid(TINY)
    assert full.concurrency == (1, 2, 4, 8, 32, 64)  # 16 became 32; the other levels stay
    with pytest.raises(ValueError, match="headline-concurrency"):
        build_config(parse("--profile", "store", "--headline-concurrency", "1"))


def test_embedder_precision_reaches_the_config_and_only_fp32_or_int8_pass():
    assert build_config(parse("--profile", "store", "--embedder-precision", "int8")).embedder_precision == "int8"
    assert build_config(parse("--profile", "store")).embedder_precision == "fp32"
    with pytest.raises(ValueError, match="embedder_precision"):
        profile("smoke", embedder_precision="fp16")


def test_onnxruntime_gpu_is_required_only_for_runtime_onnxruntime_on_cuda(monkeypatch, tmp_path):
    gpu = Machine(name="gpu-test", device="cuda", cpu_model="test", cores=1, gpu_model="Test GPU")
    monkeypatch.setattr(runner, "detect_machine", lambda device: gpu)
    monkeypatch.setattr(runner, "_require_onnxruntime_cuda", lambda: (_ for _ in ()).throw(BenchSetupError("no ort-gpu")))
    with pytest.raises(BenchSetupError, match="no ort-gpu"):
        runner.BenchRun(profile("gpu", runtime="onnxruntime", checkpoints=tmp_path))
    with pytest.raises(BenchSetupError, match="no trained run"):  # past the check, to the missing checkpoints
        runner.BenchRun(profile("gpu", checkpoints=tmp_path))


def test_slim_wheel_drops_unused_files_keeps_modes_and_record(tmp_path):
    source = tmp_path / "nvidia_pytriton-0.7.0-py3-none-any.whl"
    executable = stat.S_IFREG | 0o755
    with zipfile.ZipFile(source, "w") as wheel:
        for name, mode in (("pytriton/tritonserver/bin/tritonserver", executable),
                           ("pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub", executable),
                           ("pytriton/tritonserver/python_backend_stubs/3.13/triton_python_backend_stub", executable),
                           ("nvidia_pytriton.libs/libpython3-abc.13.so.1.0", stat.S_IFREG | 0o644)):
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            wheel.writestr(info, b"\x7fELF" + name.encode() * 100)
        rows = [f"{info.filename},sha256=x,1" for info in wheel.infolist()]
        wheel.writestr("nvidia_pytriton-0.7.0.dist-info/RECORD", "\n".join([*rows, "nvidia_pytriton-0.7.0.dist-info/RECORD,,"]))
    slim = slim_wheel(source, tmp_path / "slim.whl", unused_of(source.name))
    with zipfile.ZipFile(slim) as wheel:
        kept = {info.filename: info for info in wheel.infolist()}
        assert set(kept) == {"pytriton/tritonserver/bin/tritonserver",
                             "pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub",
                             "nvidia_pytriton-0.7.0.dist-info/RECORD"}
        assert all(info.compress_type == zipfile.ZIP_LZMA for info in kept.values())
        assert kept["pytriton/tritonserver/bin/tritonserver"].external_attr >> 16 & 0o111  # still executable
        record = wheel.read("nvidia_pytriton-0.7.0.dist-info/RECORD").decode().splitlines()
        assert {row.split(",")[0] for row in record} == set(kept)
        assert wheel.read("pytriton/tritonserver/bin/tritonserver").startswith(b"\x7fELF")
    assert unused_of("protobuf-4.25.9-cp37-abi3-manylinux2014_x86_64.whl") is None


def test_the_report_says_which_steps_ran_and_what_is_missing(tmp_path):
    steps_file = tmp_path / "steps.tsv"
    steps_file.write_text("setup\t45\t3.2\t0\nprecompute\t70\t71.0\t124\n", encoding="utf-8")
    steps = read_steps(steps_file)
    assert steps == [Step("setup", 45, 3.2, 0), Step("precompute", 70, 71.0, 124)]
    readme = write_readme(tmp_path / "out", "gpu-test-h200", steps, "Test H200, 143771 MiB, 580.1", "abc1234")
    text = readme.read_text(encoding="utf-8")
    assert readme.parent.name == "gpu-test-h200"
    assert "Test H200, 143771 MiB" in text and "abc1234" in text
    assert "| precompute | 70 | 71 | over budget (stopped) |" in text
    assert text.count("No result") == 2
