"""perf_analyzer runs and Triton's own counters around them.

    window = 200
    write_perf_analyzer_data(stream.take(data_requests(window, concurrency=16)), "level.json")
    point = run_perf_analyzer("larr", server.grpc_url, "level.json", concurrency=16, window_requests=window, work=tmp)
    before = read_statistics(server.grpc_url); ...; breakdown = statistics_delta(before, read_statistics(url))

    larr perf-data --data runs/demo/data --out perf_data.json   # a user's own perf_analyzer --input-data file

Each measured point is one perf_analyzer process over gRPC at one concurrency, in ``count_windows``
mode with exactly three windows of at least ``window_requests`` requests each, reported as their
average: a fixed-size measurement. perf_analyzer's stability search is switched off
(``STABILITY_PERCENT``): on a shared or small machine it may not converge, and then perf_analyzer
exits without a report, losing the point and leaving the cache state the run depends on changed;
the request count of every point is recorded instead. perf_analyzer walks the ``--input-data``
entries in order, so the requests it sent are the first N entries of the file, N being the
ensemble's request count in Triton's statistics; the file holds more entries than perf_analyzer
is expected to send (:func:`data_requests`), so fresh (never-seen) texts are not sent twice (should
it wrap around all the same, the point says so and its token counts replay exactly what was sent).
``--request-count``, which would fix N exactly, hung at exit in about one run in ten with this
perf_analyzer build, after every response had arrived.

Latencies and throughput come from the CSV report (``-f``, ``--verbose-csv``). The per-model
breakdown of the ensemble comes from Triton's statistics API, read before and after the run (queue
and compute time per request of every composing model, and the embedder's average batch size,
which perf_analyzer does not see through the feature cache's BLS calls).
"""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from larr.benchmarks.perf_install import find_perf_analyzer, perf_analyzer_env

# perf_analyzer CSV column -> PerfResult field (times in microseconds).
_CSV_COLUMNS = {
    "Concurrency": "concurrency",
    "Inferences/Second": "throughput",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
    "Client Recv": "client_recv_us",
    "p50 latency": "p50_us",
    "p90 latency": "p90_us",
    "p95 latency": "p95_us",
    "p99 latency": "p99_us",
    "Avg latency": "avg_latency_us",
}
_REQUIRED = ("Concurrency", "Inferences/Second", "p50 latency", "p99 latency")
WINDOWS = 3  # perf_analyzer reports the average of its last three windows
# Seen with this perf_analyzer: a count window also lasts at least about a second.
MIN_WINDOW_S = 1.5
STABILITY_PERCENT = 100_000  # any three windows count as stable: a fixed-size measurement (see module docstring)


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer failed or wrote a report this module cannot read; the message has its output's tail."""


@dataclass(frozen=True)
class PerfResult:
    """One perf_analyzer measurement (one concurrency level)."""

    concurrency: int
    throughput: float  # requests/s
    p50_us: float
    p99_us: float
    p90_us: float | None = None
    p95_us: float | None = None
    avg_latency_us: float | None = None
    client_send_us: float | None = None
    network_us: float | None = None
    server_queue_us: float | None = None
    server_compute_input_us: float | None = None
    server_compute_infer_us: float | None = None
    server_compute_output_us: float | None = None
    client_recv_us: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def parse_perf_csv(text: str) -> list[PerfResult]:
    """The rows of a perf_analyzer ``-f`` report (one per concurrency level), columns matched by name."""
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise PerfAnalyzerError(f"perf_analyzer report lacks the column(s) {missing}; header: {header}")
    results = []
    for row in reader:
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row.get("Concurrency"):
            continue  # a blank line or the metrics section some versions append
        values: dict[str, float | int | None] = {}
        for column, name in _CSV_COLUMNS.items():
            raw = row.get(column, "")
            values[name] = float(raw) if raw else None
        values["concurrency"] = int(float(row["Concurrency"]))
        results.append(PerfResult(**values))  # type: ignore[arg-type]
    if not results:
        raise PerfAnalyzerError("perf_analyzer report has a header but no measurement rows")
    return results


def data_requests(window_requests: int, concurrency: int, rate: float) -> int:
    """Entries an ``--input-data`` file needs so that perf_analyzer does not wrap around: three windows of
    at least ``window_requests`` requests and at least ``MIN_WINDOW_S`` each at the expected ``rate``
    (requests/s), twice over in case the rate was underestimated, plus what is in flight at the end."""
    per_window = max(window_requests, math.ceil(max(rate, 0.0) * MIN_WINDOW_S))
    return WINDOWS * per_window * 2 + 2 * concurrency + 16


def perf_analyzer_command(
    executable: str | Path,
    model: str,
    url: str,
    data_path: str | Path,
    concurrency: int,
    window_requests: int,
    csv_path: str | Path,
) -> list[str]:
    """The argv of one measurement: gRPC, one concurrency level, count windows of ``window_requests``."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if window_requests < 1:
        raise ValueError(f"window_requests must be >= 1, got {window_requests}")
    return [
        str(executable),
        "-m", model,
        "-u", url,
        "-i", "grpc",
        "--input-data", str(data_path),
        "--concurrency-range", str(concurrency),
        "--measurement-mode", "count_windows",
        "--measurement-request-count", str(window_requests),
        "--stability-percentage", str(STABILITY_PERCENT),
        "--max-trials", str(WINDOWS),
        # one worker thread per in-flight request (the default caps threads at 16)
        "--max-threads", str(concurrency),
        "-f", str(csv_path),
        "--verbose-csv",
    ]


def run_perf_analyzer(
    model: str,
    url: str,
    data_path: Path,
    concurrency: int,
    window_requests: int,
    work: Path,
    timeout_s: float,
) -> PerfResult:
    """Run one measurement and return its row; :class:`PerfAnalyzerError` with the output on failure."""
    csv_path = Path(work) / f"{Path(data_path).stem}.csv"
    csv_path.unlink(missing_ok=True)
    command = perf_analyzer_command(find_perf_analyzer(), model, url, data_path, concurrency, window_requests, csv_path)
    try:
        completed = subprocess.run(
            command, env=perf_analyzer_env(), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise PerfAnalyzerError(f"perf_analyzer ran past {timeout_s:.0f} s: {' '.join(command)}") from error
    output = (completed.stdout or "") + (completed.stderr or "")
    if completed.returncode != 0 or not csv_path.exists():
        tail = "\n".join(output.splitlines()[-25:])
        raise PerfAnalyzerError(f"perf_analyzer exited with {completed.returncode}: {' '.join(command)}\n{tail}")
    result = parse_perf_csv(csv_path.read_text(encoding="utf-8"))[0]
    csv_path.unlink()
    return result


# --------------------------------------------------------------------------------------------- Triton statistics


@dataclass(frozen=True)
class ModelStats:
    """Cumulative counters of one model (Triton's statistics API)."""

    inference_count: int  # inferences (batch items) performed
    execution_count: int  # model executions (batches)
    success_count: int  # successful requests
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int


def parse_statistics(stats_json: dict) -> dict[str, ModelStats]:
    """``get_inference_statistics(as_json=True)`` -> model name -> counters (int64s arrive as strings)."""
    out = {}
    for model in stats_json.get("model_stats", []):
        stats = model.get("inference_stats", {})

        def field(name: str, key: str) -> int:
            return int(stats.get(name, {}).get(key, 0))

        out[model["name"]] = ModelStats(
            inference_count=int(model.get("inference_count", 0)),
            execution_count=int(model.get("execution_count", 0)),
            success_count=field("success", "count"),
            queue_ns=field("queue", "ns"),
            compute_input_ns=field("compute_input", "ns"),
            compute_infer_ns=field("compute_infer", "ns"),
            compute_output_ns=field("compute_output", "ns"),
        )
    return out


def read_statistics(url: str) -> dict[str, ModelStats]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        return parse_statistics(client.get_inference_statistics(as_json=True))
    finally:
        client.close()


def statistics_delta(before: dict[str, ModelStats], after: dict[str, ModelStats]) -> dict[str, dict[str, float]]:
    """Per model, what happened between two snapshots: requests, executions, average batch size and the
    average queue / compute time per request in microseconds (models without requests are left out)."""
    out = {}
    for name, now in sorted(after.items()):
        then = before.get(name, ModelStats(0, 0, 0, 0, 0, 0, 0))
        requests = now.success_count - then.success_count
        if requests <= 0:
            continue
        executions = now.execution_count - then.execution_count
        inferences = now.inference_count - then.inference_count
        out[name] = {
            "requests": requests,
            "executions": executions,
            # batch elements per execution (for the embedder: scene texts, whatever the number of BLS calls)
            "avg_batch": inferences / executions if executions else 0.0,
            "queue_us": (now.queue_ns - then.queue_ns) / requests / 1e3,
            "compute_input_us": (now.compute_input_ns - then.compute_input_ns) / requests / 1e3,
            "compute_infer_us": (now.compute_infer_ns - then.compute_infer_ns) / requests / 1e3,
            "compute_output_us": (now.compute_output_ns - then.compute_output_ns) / requests / 1e3,
        }
    return out


# --------------------------------------------------------------------------------------------- larr perf-data

PERF_DATA_REQUESTS = 1000  # entries of `larr perf-data`'s file; perf_analyzer walks them in order and wraps around


def write_perf_data(data_dir: Path, out: Path, requests: int = PERF_DATA_REQUESTS, spec=None) -> Path:
    """perf_analyzer's ``--input-data`` file for the ``larr`` ensemble: ``requests`` requests drawn from the
    dataset in ``data_dir`` as the benchmarks draw theirs (:class:`larr.benchmarks.workload.RequestStream`)."""
    from larr.benchmarks.workload import RequestStream, ScenePools, WorkloadSpec, write_perf_analyzer_data
    from larr.data.schema import load_dataset

    if requests < 1:
        raise ValueError(f"requests must be >= 1, got {requests}")
    pools = ScenePools.from_dataset(load_dataset(data_dir, splits=("train",)))
    stream = RequestStream(pools, spec if spec is not None else WorkloadSpec())
    return write_perf_analyzer_data(stream.take(requests), out)


def configure_perf_data_parser(parser) -> None:
    from larr.benchmarks.workload import WorkloadSpec

    defaults = WorkloadSpec()
    add = parser.add_argument
    add("--data", required=True, type=Path, help="dataset folder the requests are drawn from (its train split)")
    add("--out", required=True, type=Path, help="JSON file to write (perf_analyzer --input-data FILE)")
    add("--requests", type=int, default=PERF_DATA_REQUESTS, help="requests in the file (perf_analyzer cycles through them)")
    add("--candidates", type=int, default=defaults.candidates, help="candidate items per request (ITEM_IDS)")
    add("--fresh-share", type=float, default=defaults.unseen_share,
        help="share of scene texts never seen in training (a seen text with a unique suffix): cache misses")
    add("--seed", type=int, default=defaults.seed, help="seed of the drawn requests")


def run_perf_data(args) -> int:
    """``larr perf-data``; a bad flag or dataset exits 2 with one line on stderr."""
    from larr.benchmarks.workload import WorkloadSpec

    if not 0.0 <= args.fresh_share <= 1.0:  # said with the flag's name, not WorkloadSpec's field's
        print(f"larr perf-data: --fresh-share must be in [0, 1], got {args.fresh_share}", file=sys.stderr)
        return 2
    try:
        spec = WorkloadSpec(unseen_share=args.fresh_share, candidates=args.candidates, seed=args.seed)
        path = write_perf_data(args.data, args.out, args.requests, spec)
    except ValueError as error:
        print(f"larr perf-data: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}: {args.requests} requests of the larr ensemble (perf_analyzer -m larr --input-data {path})")
    return 0
