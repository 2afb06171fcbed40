"""``larr soak``: drive a served repository for a bounded time and watch for errors, latency drift and memory growth.

    larr soak --model-repository REPO --data DATA_DIR --seconds 600 --concurrency 64 --out runs/soak

Starts tritonserver on REPO (``run_triton_server``: supervised, loopback), then keeps ``concurrency``
requests in flight (``timed_closed_loop``) drawn from DATA_DIR's train split by a ``RequestStream``
(Zipf scene texts, ``--fresh-share`` of them never seen before, default 10 %). Every ``--window``
seconds it records, for the requests that finished in that window: count, errors by gRPC status,
p50/p99 latency of the answered ones; and, at the window's end, the server's RSS (see :func:`server_rss`)
and the feature cache's entries, bytes and evictions (``larr_feature_cache_*``). One progress line per window.

Warm-up is the first :data:`WARMUP_SHARE` (20 %) of the windows, rounded up, at least one: ONNX Runtime's
arenas, gRPC buffers and the cache's first entries grow there by design. RSS growth is then
``(peak RSS of the later windows - RSS at the end of warm-up) / RSS at the end of warm-up``.

Writes OUT/soak.json (config, machine, every window, totals, RSS growth, verdict), OUT/README.md (the
table) and OUT/soak.png. Exit code 0 when no request failed, no stub had to be reloaded and the growth
is within ``--max-rss-growth`` (default 5 %); 1 otherwise; 2 for a usage or setup error.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from larr.benchmarks.loadgen import Outcome, TritonTransport, timed_closed_loop
from larr.benchmarks.machine import detect_machine
from larr.benchmarks.workload import RequestStream, ScenePools, WorkloadSpec
from larr.contract import ENSEMBLE_NAME
from larr.provenance import code_commit
from larr.serving.metrics import feature_cache_counters
from larr.serving.server.process import RunningServer, run_triton_server
from larr.serving.server.supervisor import find_stubs

RESULT_FILE = "soak.json"
README_FILE = "README.md"
PLOT_FILE = "soak.png"
SERVER_LOG_FILE = "tritonserver.log"
WARMUP_SHARE = 0.2  # the first 20 % of the windows are warm-up (rounded up, at least one)
DEFAULT_MAX_RSS_GROWTH = 0.05  # a leak check: RSS growth after warm-up <= 5 %
MIB = 2**20


@dataclass(frozen=True)
class SoakConfig:
    """One soak run: the ``larr soak`` flags."""

    model_repository: Path = field(metadata={"help": "exported model repository (larr export)"})
    data: Path = field(metadata={"help": "dataset folder whose train split the requests are drawn from"})
    out: Path = field(default=Path("runs/soak"), metadata={"help": "soak.json, README.md, soak.png and the server log go here"})
    seconds: float = field(default=600.0, metadata={"help": "how long the load runs"})
    concurrency: int = field(default=64, metadata={"help": "requests in flight (closed loop)"})
    fresh_share: float = field(
        default=WorkloadSpec.unseen_share, metadata={"help": "share of scene texts never sent before (cache misses)"}
    )
    # Small on purpose: the soak looks for leaks and errors, not peak throughput. With fewer candidates
    # each request costs the ctr step less, so more requests, executes and fresh texts pass through
    # every step per minute: more chances to catch a leak per minute of soak.
    candidates: int = field(default=20, metadata={"help": "candidate items per request (N)"})
    window: float = field(default=10.0, metadata={"help": "seconds per reported window (one progress line each)"})
    max_rss_growth: float = field(default=DEFAULT_MAX_RSS_GROWTH, metadata={"help": "largest allowed RSS growth after warm-up (0.05 = 5 %%)"})
    request_timeout: float = field(default=30.0, metadata={"help": "per-request deadline in seconds; a late answer counts as DEADLINE_EXCEEDED"})
    seed: int = field(default=WorkloadSpec.seed, metadata={"help": "request stream seed"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_repository", Path(self.model_repository))
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        if self.window <= 0:
            raise ValueError(f"window must be > 0 s, got {self.window}")
        if self.seconds < 2 * self.window:
            raise ValueError(f"seconds must cover at least two windows (warm-up and one after), got {self.seconds}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_rss_growth < 0 or self.request_timeout <= 0:
            raise ValueError("max_rss_growth must be >= 0 and request_timeout > 0")
        WorkloadSpec(unseen_share=self.fresh_share, candidates=self.candidates)  # its own range checks

    @property
    def windows(self) -> int:
        return math.ceil(self.seconds / self.window)

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


# --------------------------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class ServerRss:
    """Resident memory of a tritonserver and its python-backend stubs, from /proc/<pid>/status VmRSS."""

    server_bytes: int
    stub_bytes: dict[str, int]  # per model, summed over its stubs

    @property
    def total_bytes(self) -> int:
        return self.server_bytes + sum(self.stub_bytes.values())


def vm_rss_bytes(pid: int, proc: Path = Path("/proc")) -> int:
    """VmRSS of ``pid`` in bytes (0 when the process is gone, e.g. a stub being replaced)."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # "VmRSS:   123456 kB"
    return 0


def server_rss(server_pid: int, proc: Path = Path("/proc")) -> ServerRss:
    """The server's own RSS plus each of its stubs' (``find_stubs``): the stubs hold the python models,
    the feature cache among them, so the server's number alone would miss them. Shared memory that both
    map (the stubs' IPC regions) is counted in each, as VmRSS does: fine for growth over time."""
    per_model: Counter[str] = Counter()
    for stub in find_stubs(server_pid, proc):
        per_model[stub.model] += vm_rss_bytes(stub.pid, proc)
    return ServerRss(vm_rss_bytes(server_pid, proc), dict(per_model))


@dataclass(frozen=True)
class SoakWindow:
    """The requests that finished in ``[start_s, end_s)`` and the server as sampled at ``end_s``."""

    index: int
    start_s: float
    end_s: float
    requests: int
    errors: dict[str, int]  # gRPC status -> count
    p50_ms: float | None  # of the answered requests; None when none was answered
    p99_ms: float | None
    rss_bytes: int
    stub_rss_bytes: dict[str, int]
    cache_entries: float | None = None  # larr_feature_cache_entries / _bytes / _evictions_total (None: not served)
    cache_bytes: float | None = None
    cache_evictions: float | None = None  # > 0: the cache is full, later entries replace earlier ones
    load_1min: float | None = None  # the machine's 1-minute load average: other work shows here

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return self.requests / (self.end_s - self.start_s) if self.end_s > self.start_s else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "error_count": self.error_count, "throughput": self.throughput}


def latency_percentiles_ms(latencies_s: Sequence[float]) -> tuple[float | None, float | None]:
    """(p50, p99) in ms, linear interpolation (numpy's default, as the benchmarks use); None for no data."""
    if len(latencies_s) == 0:
        return None, None
    p50, p99 = np.percentile(np.asarray(latencies_s, dtype=np.float64), [50, 99]) * 1e3
    return float(p50), float(p99)


def summarize_window(
    index: int, start_s: float, end_s: float, outcomes: Sequence[Outcome], rss: ServerRss, **server: float | None
) -> SoakWindow:
    """The window of the ``outcomes`` that finished in ``[start_s, end_s)`` (others are ignored)."""
    inside = [o for o in outcomes if start_s <= o.finished_s < end_s]
    errors = Counter(o.status for o in inside if o.status is not None)
    p50, p99 = latency_percentiles_ms([o.latency_s for o in inside if o.status is None])
    return SoakWindow(index, start_s, end_s, len(inside), dict(sorted(errors.items())), p50, p99,
                      rss.total_bytes, rss.stub_bytes, **server)


def warmup_windows(windows: int, share: float = WARMUP_SHARE) -> int:
    """How many leading windows are warm-up: ``ceil(share * windows)``, at least one, leaving one after."""
    if windows < 2:
        raise ValueError(f"need at least two windows (warm-up and one after), got {windows}")
    return min(max(1, math.ceil(share * windows)), windows - 1)


@dataclass(frozen=True)
class RssGrowth:
    """RSS after warm-up against RSS at its end (see the module docstring)."""

    warmup_windows: int
    warmup_s: float  # when warm-up ended, seconds into the run
    baseline_bytes: int  # RSS sampled at the end of the last warm-up window
    peak_bytes: int  # largest RSS sampled after warm-up
    final_bytes: int  # RSS sampled at the end of the run

    @property
    def growth(self) -> float:
        """(peak - baseline) / baseline: what the bound is checked against."""
        return (self.peak_bytes - self.baseline_bytes) / self.baseline_bytes

    @property
    def final_growth(self) -> float:
        return (self.final_bytes - self.baseline_bytes) / self.baseline_bytes

    def to_json(self) -> dict:
        return {**asdict(self), "growth": self.growth, "final_growth": self.final_growth}


def rss_growth(windows: Sequence[SoakWindow], share: float = WARMUP_SHARE) -> RssGrowth:
    warm = warmup_windows(len(windows), share)
    baseline = windows[warm - 1]
    after = [w.rss_bytes for w in windows[warm:]]
    return RssGrowth(warm, baseline.end_s, baseline.rss_bytes, max(after), after[-1])


@dataclass(frozen=True)
class SoakResult:
    config: SoakConfig
    windows: list[SoakWindow]
    latencies_s: np.ndarray  # (answered requests,) over the whole run
    seconds: float  # from the first request to the last answer
    stub_restarts: dict[str, int]  # per model: reloads by the stub supervisor (a stub died)
    machine: dict
    command: str
    code_commit: str | None = None  # the checkout's commit the run's code came from (None outside a checkout)

    @property
    def requests(self) -> int:
        return sum(w.requests for w in self.windows)

    @property
    def errors(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for window in self.windows:
            total.update(window.errors)
        return dict(sorted(total.items()))

    @property
    def rss(self) -> RssGrowth:
        return rss_growth(self.windows)

    def failures(self) -> list[str]:
        """Why the soak failed (empty: it passed)."""
        reasons = []
        if self.errors:
            reasons.append(f"{sum(self.errors.values())} requests failed: {self.errors}")
        if any(self.stub_restarts.values()):
            reasons.append(f"python-backend stubs died and were reloaded: {self.stub_restarts}")
        if self.rss.growth > self.config.max_rss_growth:
            reasons.append(f"RSS grew {self.rss.growth:.1%} after warm-up, more than {self.config.max_rss_growth:.1%}")
        return reasons

    def to_json(self) -> dict:
        p50, p99 = latency_percentiles_ms(self.latencies_s)
        return {
            "config": self.config.to_json(),
            "command": self.command,
            "machine": self.machine,
            "code_commit": self.code_commit,
            "warmup": f"the first {WARMUP_SHARE:.0%} of the windows (rounded up, at least one)",
            "totals": {
                "requests": self.requests,
                "errors": self.errors,
                "error_count": sum(self.errors.values()),
                "seconds": self.seconds,
                "throughput": self.requests / self.seconds if self.seconds > 0 else 0.0,
                "p50_ms": p50,
                "p99_ms": p99,
                "stub_restarts": self.stub_restarts,
            },
            "rss": self.rss.to_json(),
            "passed": not self.failures(),
            "failures": self.failures(),
            "windows": [w.to_json() for w in self.windows],
        }


# --------------------------------------------------------------------------------------------- the run


_CACHE_LEVELS = {"cache_entries": "entries", "cache_bytes": "bytes", "cache_evictions": "evictions_total"}


def _cache_levels(server: RunningServer) -> dict[str, float | None]:
    counters = feature_cache_counters(server.metrics_url)
    return {name: counters.get(metric) for name, metric in _CACHE_LEVELS.items()}


def progress_line(window: SoakWindow, windows: int) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    cache = "" if window.cache_entries is None else f"  cache {window.cache_entries:,.0f} entries {window.cache_bytes / MIB:.1f} MiB"
    errors = f"errors {window.error_count}" + (f" {window.errors}" if window.errors else "")
    return (
        f"[{window.index + 1:>3}/{windows}] {window.end_s:6.0f} s  {window.requests:6d} req ({window.throughput:6.1f}/s)  "
        f"{errors}  p50 {ms(window.p50_ms)} ms  p99 {ms(window.p99_ms)} ms  rss {window.rss_bytes / MIB:,.1f} MiB{cache}"
    )


async def _drive(config: SoakConfig, server: RunningServer, stream: RequestStream) -> tuple[list[SoakWindow], list[float]]:
    """The load and, beside it in the same event loop, one sample at the end of each window."""
    outcomes: list[Outcome] = []  # appended as they finish, so finished_s only grows
    transport = TritonTransport(server.grpc_url, ENSEMBLE_NAME, timeout_s=config.request_timeout)
    start = time.perf_counter()
    load = asyncio.ensure_future(
        timed_closed_loop(transport, lambda: stream.take(1)[0], config.concurrency, config.seconds, outcomes.append)
    )
    windows: list[SoakWindow] = []
    taken = 0  # outcomes already in a window: the windows are consecutive slices of `outcomes`
    start_s = 0.0
    for index in range(config.windows):
        if index == config.windows - 1:
            await load  # the last window also takes the answers to the requests in flight at the deadline
        else:
            await asyncio.wait({load}, timeout=max(0.0, start + (index + 1) * config.window - time.perf_counter()))
            if load.done():
                load.result()  # the load itself crashed (a failed request is an outcome, not a crash)
        end_s = time.perf_counter() - start
        rss = server_rss(server.process.pid)
        levels = await asyncio.to_thread(_cache_levels, server)
        relative = [Outcome(o.finished_s - start, o.latency_s, o.status) for o in outcomes[taken:]]
        window = summarize_window(index, start_s, end_s, relative, rss, load_1min=os.getloadavg()[0], **levels)
        taken, start_s = taken + window.requests, end_s
        windows.append(window)
        print(progress_line(window, config.windows), flush=True)
    return windows, [o.latency_s for o in outcomes if o.status is None]


def run_soak(config: SoakConfig, command: str = "") -> SoakResult:
    """Serve ``config.model_repository``, drive it, and return the measurements (nothing written)."""
    from larr.data.schema import load_dataset

    pools = ScenePools.from_dataset(load_dataset(config.data, splits=("train",)))
    stream = RequestStream(pools, WorkloadSpec(unseen_share=config.fresh_share, candidates=config.candidates, seed=config.seed))
    machine = detect_machine("cpu").to_json()  # the host; the repository's own config says where its models run
    config.out.mkdir(parents=True, exist_ok=True)
    with run_triton_server(config.model_repository, log_path=config.out / SERVER_LOG_FILE) as server:
        print(f"larr soak: serving {config.model_repository} (gRPC {server.grpc_url}); {config.seconds:.0f} s at "
              f"concurrency {config.concurrency}, {config.fresh_share:.0%} fresh texts, {config.candidates} candidates",
              flush=True)
        windows, latencies = asyncio.run(_drive(config, server, stream))
        supervisor = server.supervisor
        restarts = {model: supervisor.restarts(model) for model in supervisor.expected} if supervisor else {}
    return SoakResult(config, windows, np.asarray(latencies), windows[-1].end_s, restarts, machine, command,
                      code_commit())


# --------------------------------------------------------------------------------------------- outputs


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report_markdown(result: SoakResult) -> str:
    """README.md of a soak: what ran, the verdict, the totals and one row per window."""
    doc = result.to_json()
    totals, rss, config, machine = doc["totals"], result.rss, result.config, result.machine
    verdict = "passed" if doc["passed"] else "FAILED: " + "; ".join(doc["failures"])
    lines = [
        f"# Soak: {config.seconds:.0f} s at concurrency {config.concurrency}",
        "",
        f"- command: `{result.command}`" if result.command else "- command: (called from Python)",
        f"- machine: {machine['name']} ({machine['cpu_model']}, {machine['cores']} usable cores)",
        f"- model repository: `{config.model_repository}`; requests from `{config.data}` (train split), "
        f"{config.fresh_share:.0%} fresh scene texts, {config.candidates} candidates",
        f"- verdict: **{verdict}**",
        f"- requests: {totals['requests']:,} in {totals['seconds']:.0f} s ({totals['throughput']:.1f}/s); "
        f"errors: {totals['error_count']}{' ' + str(totals['errors']) if totals['errors'] else ''}; p50 {_ms(totals['p50_ms'])} ms, "
        f"p99 {_ms(totals['p99_ms'])} ms; stub restarts: {sum(totals['stub_restarts'].values())}",
        f"- RSS (tritonserver + its python-backend stubs, VmRSS): {rss.baseline_bytes / MIB:,.1f} MiB after warm-up "
        f"(the first {rss.warmup_windows} windows, {rss.warmup_s:.0f} s), peak after it {rss.peak_bytes / MIB:,.1f} MiB "
        f"(growth {rss.growth:+.2%}, bound {config.max_rss_growth:.0%}), at the end {rss.final_bytes / MIB:,.1f} MiB "
        f"({rss.final_growth:+.2%})",
        "",
        "| window | end s | requests | req/s | errors | p50 ms | p99 ms | RSS MiB | cache entries | cache MiB | load 1 min |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in result.windows:
        cache_entries = "-" if w.cache_entries is None else f"{w.cache_entries:,.0f}"
        cache_mib = "-" if w.cache_bytes is None else f"{w.cache_bytes / MIB:.1f}"
        load = "-" if w.load_1min is None else f"{w.load_1min:.1f}"
        warm = " (warm-up)" if w.index < rss.warmup_windows else ""
        lines.append(
            f"| {w.index + 1}{warm} | {w.end_s:.0f} | {w.requests:,} | {w.throughput:.1f} | {w.error_count} | "
            f"{_ms(w.p50_ms)} | {_ms(w.p99_ms)} | {w.rss_bytes / MIB:,.1f} | {cache_entries} | {cache_mib} | {load} |"
        )
    return "\n".join(lines) + "\n"


def plot_soak(result: SoakResult, path: Path) -> Path:
    """Latency (p50, p99) and RSS per window, warm-up shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ends = [w.end_s for w in result.windows]
    fig, (latency, memory) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name in ("p50_ms", "p99_ms"):
        values = [getattr(w, name) if getattr(w, name) is not None else np.nan for w in result.windows]
        latency.plot(ends, values, marker=".", label=name.replace("_ms", ""))
    latency.set_ylabel("latency per window (ms)")
    latency.legend()
    memory.plot(ends, [w.rss_bytes / MIB for w in result.windows], marker=".", color="tab:red")
    memory.set_ylabel("server + stubs RSS (MiB)")
    memory.set_xlabel("seconds into the run")
    for axis in (latency, memory):
        axis.axvspan(0, result.rss.warmup_s, color="grey", alpha=0.15, label="warm-up")
        axis.grid(alpha=0.3)
    fig.suptitle(f"larr soak: concurrency {result.config.concurrency}, {result.config.fresh_share:.0%} fresh texts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(result: SoakResult, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / RESULT_FILE, "readme": out / README_FILE, "plot": out / PLOT_FILE}
    paths["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    paths["readme"].write_text(report_markdown(result), encoding="utf-8")
    plot_soak(result, paths["plot"])
    return paths

