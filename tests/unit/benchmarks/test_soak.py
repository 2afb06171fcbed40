"""``larr soak``'s arithmetic (windows, percentiles, warm-up, RSS growth) against independent numpy
computations, its RSS reading on a fake /proc, the timed load loop on a fake transport, and the flags."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from larr.benchmarks.cli import configure_soak_parser
from larr.benchmarks.loadgen import LoadError, Outcome, error_status, timed_closed_loop
from larr.benchmarks.soak import (
    DEFAULT_MAX_RSS_GROWTH,
    WARMUP_SHARE,
    ServerRss,
    SoakConfig,
    SoakResult,
    SoakWindow,
    rss_growth,
    server_rss,
    summarize_window,
    warmup_windows,
    write_outputs,
)
from larr.benchmarks.workload import BenchRequest
from larr.serving.server.supervisor import STUB_EXECUTABLE

STATUSES = np.array(["UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL"])
NO_RSS = ServerRss(0, {})


def _random_outcomes(seed: int, count: int = 5000, seconds: float = 60.0):
    rng = np.random.default_rng(seed)
    finished = np.sort(rng.uniform(0, seconds, count))
    latency = rng.lognormal(-4, 0.7, count)
    failed = rng.random(count) < 0.03
    status = np.where(failed, STATUSES[rng.integers(0, len(STATUSES), count)], "")
    outcomes = [Outcome(float(f), float(l), str(s) or None) for f, l, s in zip(finished, latency, status)]
    return outcomes, finished, latency, status


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_window_counts_and_percentiles_match_numpy(seed: int) -> None:
    outcomes, finished, latency, status = _random_outcomes(seed)
    for index, start in enumerate(np.arange(0, 60, 10.0)):
        window = summarize_window(index, start, start + 10, outcomes, NO_RSS)
        inside = (finished >= start) & (finished < start + 10)
        answered = inside & (status == "")
        assert window.requests == int(inside.sum())
        names, counts = np.unique(status[inside & (status != "")], return_counts=True)
        assert window.errors == dict(zip(names.tolist(), counts.tolist()))
        assert window.error_count == int((inside & (status != "")).sum())
        assert window.p50_ms == pytest.approx(np.median(latency[answered]) * 1e3)
        assert window.p99_ms == pytest.approx(np.quantile(latency[answered], 0.99) * 1e3)
        assert window.throughput == pytest.approx(inside.sum() / 10)


def test_a_window_without_answers_has_no_percentiles_but_counts_its_errors() -> None:
    outcomes = [Outcome(1.0, 0.5, "UNAVAILABLE"), Outcome(2.0, 0.1, "UNAVAILABLE"), Outcome(12.0, 0.2, None)]
    window = summarize_window(0, 0.0, 10.0, outcomes, NO_RSS)
    assert (window.requests, window.errors, window.p50_ms, window.p99_ms) == (2, {"UNAVAILABLE": 2}, None, None)


def test_warmup_is_the_first_fifth_of_the_windows_rounded_up() -> None:
    assert WARMUP_SHARE == 0.2
    assert [warmup_windows(n) for n in (2, 5, 6, 10, 60, 61)] == [1, 1, 2, 2, 12, 13]
    with pytest.raises(ValueError):
        warmup_windows(1)


def _windows(rss: np.ndarray) -> list[SoakWindow]:
    return [SoakWindow(i, 10.0 * i, 10.0 * (i + 1), 100, {}, 1.0, 2.0, int(r), {}) for i, r in enumerate(rss)]


@pytest.mark.parametrize("seed", [0, 1])
def test_rss_growth_is_the_peak_after_warmup_over_the_rss_at_its_end(seed: int) -> None:
    rss = np.random.default_rng(seed).integers(250, 320, size=60) * 2**20
    growth = rss_growth(_windows(rss))
    warm = int(np.ceil(0.2 * len(rss)))
    assert growth.warmup_windows == warm and growth.warmup_s == 10.0 * warm
    assert growth.baseline_bytes == rss[warm - 1]
    assert growth.growth == pytest.approx(rss[warm:].max() / rss[warm - 1] - 1)
    assert growth.final_growth == pytest.approx(rss[-1] / rss[warm - 1] - 1)


def test_a_soak_fails_on_errors_on_stub_reloads_and_on_growth_past_the_bound(tmp_path: Path) -> None:
    config = SoakConfig(model_repository=tmp_path, data=tmp_path, seconds=30, window=10, max_rss_growth=0.05)
    flat = _windows(np.array([100, 100, 104]) * 2**20)

    def result(windows, restarts=None) -> SoakResult:
        return SoakResult(config, windows, np.array([0.01]), 30.0, restarts or {"ctr": 0}, {}, "")

    assert result(flat).failures() == []
    grown = _windows(np.array([100, 100, 106]) * 2**20)
    assert "RSS grew 6.0%" in result(grown).failures()[0]
    failed = flat[:2] + [SoakWindow(2, 20, 30, 5, {"INTERNAL": 1}, 1.0, 2.0, 100 * 2**20, {})]
    assert result(failed).failures() == ["1 requests failed: {'INTERNAL': 1}"]
    assert "reloaded" in result(flat, {"ctr": 1}).failures()[0]


def test_outputs_hold_every_window_and_the_verdict(tmp_path: Path) -> None:
    config = SoakConfig(model_repository=tmp_path, data=tmp_path, seconds=30, window=10)
    windows = _windows(np.array([100, 101, 101]) * 2**20)
    paths = write_outputs(SoakResult(config, windows, np.array([0.01, 0.02]), 30.0, {}, {"name": "m", "cpu_model": "c", "cores": 2}, "larr soak",
                                     "0123abc"), tmp_path / "out")
    doc = json.loads(paths["json"].read_text())
    assert doc["passed"] and len(doc["windows"]) == 3 and doc["totals"]["requests"] == 300
    assert doc["code_commit"] == "0123abc"  # what `larr docs render` names under the soak table
    assert doc["rss"]["baseline_bytes"] == 100 * 2**20
    assert paths["readme"].read_text().count("\n| ") == 3 + 1  # header + one row per window
    assert paths["plot"].stat().st_size > 0


# --------------------------------------------------------------------------------------------- RSS from /proc


def _fake_process(proc: Path, pid: int, ppid: int, rss_kb: int, argv: list[str]) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "stat").write_text(f"{pid} (proc name) S {ppid} 1 1 0")
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (folder / "status").write_text(f"Name:\tx\nVmPeak:\t 999999 kB\nVmRSS:\t {rss_kb} kB\nThreads:\t4\n")


def test_server_rss_is_the_server_plus_each_of_its_stubs(tmp_path: Path) -> None:
    stub = f"/opt/backends/python/{STUB_EXECUTABLE}"
    _fake_process(tmp_path, 100, 1, 200_000, ["tritonserver"])
    _fake_process(tmp_path, 101, 100, 50_000, [stub, "/repo/feature_cache/1/model.py", "shm_a"])
    _fake_process(tmp_path, 102, 100, 30_000, [stub, "/repo/embedder/1/model.py", "shm_b"])
    _fake_process(tmp_path, 103, 100, 31_000, [stub, "/repo/embedder/1/model.py", "shm_c"])
    _fake_process(tmp_path, 104, 1, 70_000, [stub, "/other/ctr/1/model.py", "shm_d"])  # another server's stub
    rss = server_rss(100, proc=tmp_path)
    assert rss.server_bytes == 200_000 * 1024
    assert rss.stub_bytes == {"feature_cache": 50_000 * 1024, "embedder": 61_000 * 1024}
    assert rss.total_bytes == (200_000 + 50_000 + 61_000) * 1024


# --------------------------------------------------------------------------------------------- the timed loop


def test_error_status_is_the_grpc_status_name_of_the_tritonclient_error() -> None:
    try:
        raise LoadError("larr: boom") from InferenceServerException("boom", status="StatusCode.UNAVAILABLE")
    except LoadError as error:
        assert error_status(error) == "UNAVAILABLE"
    assert error_status(ValueError("not grpc")) == "ValueError"


class _FlakyTransport:
    """Every third request fails with INTERNAL; counts what it saw."""

    def __init__(self) -> None:
        self.sent = 0
        self.opened = self.closed = False

    async def open(self, concurrency: int) -> None:
        self.opened = True

    def encode(self, request: BenchRequest) -> BenchRequest:
        return request

    async def send(self, encoded: BenchRequest) -> None:
        self.sent += 1
        await asyncio.sleep(0.001)
        if encoded.user_id % 3 == 2:
            raise LoadError("failed") from InferenceServerException("failed", status="StatusCode.INTERNAL")

    async def close(self) -> None:
        self.closed = True


def test_the_timed_loop_records_every_request_and_keeps_going_after_failures() -> None:
    transport, outcomes, counter = _FlakyTransport(), [], iter(range(10**9))
    asyncio.run(timed_closed_loop(transport, lambda: BenchRequest(("a",), next(counter), (1,)), 4, 0.2, outcomes.append))
    assert transport.opened and transport.closed
    assert len(outcomes) == transport.sent > 10
    finished = [o.finished_s for o in outcomes]
    assert finished == sorted(finished)
    failed = [o for o in outcomes if o.status is not None]
    assert failed and {o.status for o in failed} == {"INTERNAL"}
    assert abs(len(failed) - len(outcomes) / 3) <= 4  # one in three, give or take the requests in flight


# --------------------------------------------------------------------------------------------- flags


def test_flags_build_the_config_with_its_defaults(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    configure_soak_parser(parser)
    args = parser.parse_args(["--model-repository", str(tmp_path), "--data", "d", "--seconds", "60", "--concurrency", "16"])
    config = SoakConfig(**vars(args))
    assert (config.seconds, config.concurrency, config.fresh_share, config.candidates) == (60.0, 16, 0.1, 20)
    assert config.max_rss_growth == DEFAULT_MAX_RSS_GROWTH == 0.05 and config.windows == 6
    with pytest.raises(ValueError, match="two windows"):
        SoakConfig(model_repository=tmp_path, data=tmp_path, seconds=15, window=10)
    with pytest.raises(ValueError):
        SoakConfig(model_repository=tmp_path, data=tmp_path, fresh_share=1.5)
