"""One benchmark run, top to bottom: per LLM size, build the models, measure every variant, then summarise.

    results = BenchRun(profile("full", checkpoints=Path("runs/demo/run"))).run()   # also writes results.json

Order per LLM size (each Triton variant on a fresh server; nothing is shared between variants):

1. perf_analyzer sweeps of the Triton variants: LARR (cache on) at the headline unseen share, cache
   off and the full-text baseline at the same share, then LARR at the other shares. Every server
   first gets the same warm-up -- the first W requests of its stream, one at a time -- then the
   concurrency levels in ascending order, each consuming the next requests of the stream (the cache
   keeps what earlier levels put in it, as a long-running server would).
2. In-process: the same repository's models called in this process on the same requests (the same
   warm-up, every segment replayed in order, the concurrency-1 and headline segments timed), for the
   serving overhead.
3. FastAPI (same repository and runtime) vs the Triton ensemble, each fresh, both driven by the same Python closed-loop
   generator with the same warm-up and the same requests.
4. The embedder at saturation (tokens/s) for the MFU against the fp32 GEMM peak measured at the start.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from larr.benchmarks.config import (
    CACHE_OFF,
    FASTAPI,
    FULLTEXT,
    INPROCESS,
    LARR,
    LARR_LOADGEN,
    LLM_SHAPES,
    BenchConfig,
    SizeGrid,
)
from larr.benchmarks.fulltext_repository import FULLTEXT_EMBED_MODEL, FULLTEXT_ENSEMBLE_NAME
from larr.benchmarks.machine import Machine, detect_machine
from larr.benchmarks.models import (
    CTR_LARR,
    BenchSetupError,
    SizeModels,
    display_path,
    find_base_run,
    prepare_size,
)
from larr.benchmarks.workload import (
    CacheSimulator,
    RequestStream,
    ScenePools,
    WorkloadSpec,
    write_perf_analyzer_data,
)
from larr.contract import CTR_MODEL, EMBEDDER_MODEL, ENSEMBLE_NAME, FEATURE_CACHE_MODEL, SCENE_TABLE_INDEX_FILE
from larr.export.fresh_text_policy import apply_fresh_text_policy
from larr.export.options import ONNX_FILE, VERSION
from larr.layout import RunLayout
from larr.serving.runtime import ONNX_RUNTIME

RESULTS_FILE = "results.json"
MODEL_OF_VARIANT = {LARR: ENSEMBLE_NAME, CACHE_OFF: ENSEMBLE_NAME, FULLTEXT: FULLTEXT_ENSEMBLE_NAME}
PERF_ANALYZER, LOADGEN, IN_PROCESS = "perf_analyzer", "loadgen", "inprocess"
MAX_RATE_GROWTH = 4.0  # data files are sized for up to this throughput gain over the previous level
LONG_RUN_REQUESTS = 20_000  # the simulated long-running server of the hit-rate plot
SATURATION_ROUNDS = 4  # fp32 / int8 turns at saturation, alternating which goes first


@dataclass
class Point:
    """One measured point (a row of points.csv)."""

    llm_size: str
    variant: str
    method: str  # perf_analyzer | loadgen | inprocess
    unseen_share: float
    concurrency: int
    requests: int
    seconds: float  # wall time of the measurement
    throughput: float  # requests/s
    avg_latency_us: float | None
    p50_us: float | None
    p90_us: float | None
    p95_us: float | None
    p99_us: float | None
    cache: dict | None = None  # measured by the server: hits, misses, hit_rate
    simulated: dict | None = None  # the same segment replayed through the feature cache (token counts)
    breakdown: dict | None = None  # Triton statistics per model
    perf: dict | None = None  # perf_analyzer's full row (client/network/server split)
    wrapped: bool = False  # perf_analyzer ran past the end of its data file (fresh texts were sent again)
    history: int | None = None  # requests this server had answered before the point (warm-up included)
    repeat: int = 0  # which of the config's independent repeats (fresh server, stream seeded stream_seed + repeat)
    batch: int | None = None  # in-process points: requests per call (Triton's mean ctr batch at the same point)
    workers: int | None = None  # in-process points: calls in flight (threads), ceil(concurrency / batch)

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SizeResult:
    """Everything measured for one LLM size, plus what the models were."""

    llm_size: str
    label: str
    labels: dict[str, str]
    parameters: int
    non_embedding_parameters: int
    points: list[Point] = field(default_factory=list)
    # "r<repeat>/<variant>/<share>" -> per segment [entries taken from the stream, requests sent]; the warm-up first
    segments: dict[str, list[list[int]]] = field(default_factory=dict)
    saturation: dict | None = None
    fulltext_tokens: dict | None = None  # whole-scene token counts of the headline stream
    precompute: dict | None = None  # the scene table's build at export: texts, tokens/s, MFU (scene_table.json)

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["points"] = [p.to_json() for p in self.points]
        return out


class Progress:
    """Prints what is being measured, the time so far and an estimate of the time left."""

    def __init__(self, planned: dict[str, float], echo: Callable[[str], None] | None = None):
        self.planned = planned  # task -> planned seconds
        self.done: set[str] = set()
        self.echo = echo or _echo
        self.start = time.monotonic()

    def task(self, name: str, what: str) -> None:
        elapsed = time.monotonic() - self.start
        planned_done = sum(self.planned[t] for t in self.done)
        planned_left = sum(s for t, s in self.planned.items() if t not in self.done)
        # Scale the plan by how fast the finished part went, once there is something to scale by.
        speed = elapsed / planned_done if planned_done > 30 else 1.0
        self.echo(f"[{_clock(elapsed)} elapsed, ~{_clock(planned_left * speed)} left] {what}")

    def finish(self, name: str) -> None:
        self.done.add(name)

    def note(self, text: str) -> None:
        self.echo(f"    {text}")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


def _echo(line: str) -> None:
    print(line, flush=True)  # flushed: the run is long and often logged to a file


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def window_requests(rate: float, grid: SizeGrid, concurrency: int) -> int:
    """Requests per perf_analyzer window: ``rate`` x the target duration over the windows of a point,
    within the grid's bounds and at least the concurrency (so ramp-up is a small part of a window)."""
    from larr.benchmarks.perf import WINDOWS

    wanted = math.ceil(max(rate, 0.0) * grid.target_seconds / WINDOWS)
    return int(max(min(max(wanted, grid.min_window), grid.max_window), concurrency))


# --------------------------------------------------------------------------------------------- the run


class BenchRun:
    """Holds what every measurement needs; :meth:`run` does the whole benchmark."""

    def __init__(self, config: BenchConfig, echo: Callable[[str], None] | None = None):
        self.config = config
        self.echo = echo or _echo
        self.machine: Machine = detect_machine(config.device)
        if self.machine.device == "cuda" and config.runtime == "onnxruntime":
            _require_onnxruntime_cuda()
        self.base = find_base_run(config.checkpoints)
        from larr.data.schema import load_dataset

        self.pools = ScenePools.from_dataset(load_dataset(self.base.data_dir, splits=("train",)))
        self.results_dir = Path(config.out) / self.machine.name
        self.work = Path(config.work)
        self.progress = Progress(self._plan(), self.echo)

    def _plan(self) -> dict[str, float]:
        """Planned seconds per task, for the time-left estimate only."""
        plan = {"gemm": 5.0}
        for size in self.config.llm_sizes:
            grid = self.config.grid(size)
            # Seen on 2 CPU cores: a point lasts its target or three ~1.5 s windows, plus time that grows
            # with the LLM (exports, model loads, the cold warm-up, windows of at least `concurrency`
            # requests). A faster machine finishes sooner; Progress rescales by the observed pace.
            non_embedding, embedding = (n / 1e6 for n in LLM_SHAPES[size].approximate_parameters())
            setup = 10.0 + 0.3 * (non_embedding + embedding)
            point = max(grid.target_seconds, 4.5) + 1.0 + 0.12 * non_embedding
            start = 8.0 + 0.1 * non_embedding

            def sweep(levels: tuple[int, ...]) -> float:
                return start + len(levels) * point

            plan[f"{size}/setup"] = setup
            for repeat in range(self.config.repeats):
                prefix = _task_prefix(size, repeat)
                for share in grid.unseen_shares:
                    levels = grid.concurrency if share == self.config.headline_unseen else grid.share_concurrency
                    plan[f"{prefix}/{LARR}/{share}"] = sweep(levels)
                plan[f"{prefix}/{CACHE_OFF}"] = sweep(grid.baseline_concurrency)
                plan[f"{prefix}/{FULLTEXT}"] = sweep(grid.baseline_concurrency)
                plan[f"{prefix}/{INPROCESS}"] = 5.0 + 2 * grid.target_seconds
                plan[f"{prefix}/loadgen"] = 2 * sweep(grid.loadgen_concurrency)
            plan[f"{size}/saturation"] = 5.0 + self.config.saturation_seconds
        return plan

    def run(self) -> dict:
        """Measure everything, write results.json; returns the results document."""
        from larr.benchmarks.inprocess import gemm_peak

        started = time.time()
        self.echo(f"larr bench: machine {self.machine.name} ({self.machine.cpu_model}, {self.machine.cores} cores"
                  f"{', ' + self.machine.gpu_model if self.machine.gpu_model else ''}); results -> {self.results_dir}")
        self.progress.task("gemm", f"fp32 GEMM peak ({self.config.gemm_size}^2 on {self.machine.device})")
        peak = gemm_peak(self.machine.device, self.config.gemm_size)
        self.progress.note(f"{peak.flops / 1e9:.1f} GFLOP/s")
        self.progress.finish("gemm")
        sizes = [self._run_size(size) for size in self.config.llm_sizes]
        long_run = self._long_run()
        document = {
            "machine": self.machine.to_json(),
            "config": _config_json(self.config),
            "checkpoints": display_path(self.base.checkpoints),
            "dataset": display_path(self.base.data_dir),
            "gemm_peak": peak.to_json(),
            "sizes": [s.to_json() for s in sizes],
            "long_run": long_run,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": time.time() - started,
            "versions": _versions(),
        }
        self.results_dir.mkdir(parents=True, exist_ok=True)
        (self.results_dir / RESULTS_FILE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        return document

    # ------------------------------------------------------------------------------------------ one size

    def _run_size(self, size: str) -> SizeResult:
        config, shape = self.config, LLM_SHAPES[size]
        self.progress.task(f"{size}/setup", f"{size}: models and repositories ({shape.label})")
        models = prepare_size(
            shape, self.base, self.work, device=self.machine.device, runtime=config.runtime,
            cache_capacity=config.cache_capacity, embedder_precision=config.embedder_precision,
            embedder_width_ratio=config.embedder_width_ratio,
            max_candidates=max(1000, config.candidates), fulltext_max_length=config.fulltext_max_length,
            seed=config.seed, rebuild=config.rebuild, progress=self.progress.note,
        )
        # a serving-time choice: the reused repository is switched, not exported again (its scene table took minutes)
        apply_fresh_text_policy(models.repositories[LARR], config.fresh_text_policy,
                                busy_share=config.background_busy_share, miss_deadline_ms=config.miss_deadline_ms)
        self.progress.finish(f"{size}/setup")
        result = SizeResult(
            llm_size=size, label=shape.label, labels=models.labels, parameters=models.parameters.total,
            non_embedding_parameters=models.parameters.non_embedding,
            precompute=_precompute(models.repositories[LARR]),
        )
        for repeat in range(config.repeats):
            self._measure(models, result, repeat)
        if "saturation" not in config.skip:
            self._saturation(models, result)
        return result

    def _measure(self, models: SizeModels, result: SizeResult, repeat: int) -> None:
        """One independent repeat of every point of a size: fresh servers, the stream seeded ``stream_seed + repeat``."""
        config, grid = self.config, self.config.grid(result.llm_size)
        prefix, head = _task_prefix(result.llm_size, repeat), config.headline_unseen
        self._triton_sweep(models, result, LARR, head, grid.concurrency, repeat, f"{prefix}/{LARR}/{head}")
        self._triton_sweep(models, result, CACHE_OFF, head, grid.baseline_concurrency, repeat, f"{prefix}/{CACHE_OFF}")
        self._triton_sweep(models, result, FULLTEXT, head, grid.baseline_concurrency, repeat, f"{prefix}/{FULLTEXT}")
        for share in grid.unseen_shares:
            if share != head:
                self._triton_sweep(models, result, LARR, share, grid.share_concurrency, repeat, f"{prefix}/{LARR}/{share}")
        if "inprocess" not in config.skip:
            self._inprocess(models, result, repeat)
        if "fastapi" not in config.skip:
            self._loadgen(models, result, repeat)

    def _stream(self, share: float, repeat: int = 0) -> RequestStream:
        spec = WorkloadSpec(share, self.config.candidates, self.config.zipf_exponent, self.config.stream_seed_of(repeat))
        return RequestStream(self.pools, spec)

    def _simulator(self, models: SizeModels, variant: str) -> CacheSimulator:
        from larr.benchmarks.inprocess import model_config
        from larr.contract import PARAM_EMBEDDER_VERSION
        from larr.serving.runtime import model_parameters
        from larr.serving.stores.factory import make_store
        from larr.tokenization import EmbeddingTokenizer

        # the served store itself (its scene table included): the replay starts from what the server starts with;
        # the full-text baseline has no store (its token counts are what the replay is for): the cache-off one
        repository = models.repositories[CACHE_OFF if variant == FULLTEXT else variant]
        version_dir = repository / FEATURE_CACHE_MODEL / "1"
        tokenizer = EmbeddingTokenizer.from_directory(version_dir)
        fulltext = EmbeddingTokenizer.from_directory(models.repositories[FULLTEXT] / FULLTEXT_EMBED_MODEL / "1")
        params = model_parameters(model_config(repository, FEATURE_CACHE_MODEL))
        store = make_store(params, version_dir, tokenizer.max_text_chars)
        return CacheSimulator(self.pools.features, tokenizer, fulltext, store=store,
                              embedder_version=params[PARAM_EMBEDDER_VERSION])

    def _triton_sweep(
        self,
        models: SizeModels,
        result: SizeResult,
        variant: str,
        share: float,
        levels: tuple[int, ...],
        repeat: int,
        task: str,
    ) -> None:
        from larr.benchmarks.loadgen import TritonTransport, run_closed_loop
        from larr.benchmarks.perf import data_requests, read_statistics, run_perf_analyzer, statistics_delta
        from larr.serving.metrics import feature_cache_counters as cache_counters
        from larr.serving.server.process import run_triton_server

        size, grid, config = result.llm_size, self.config.grid(result.llm_size), self.config
        model = MODEL_OF_VARIANT[variant]
        self.progress.task(task, f"{size}: {variant} (perf_analyzer), unseen {share:.0%}, concurrency {list(levels)}")
        data_dir = self.work / size / "data"
        log_dir = self.work / size / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        stream, simulator = self._stream(share, repeat), self._simulator(models, variant)
        warmup = stream.take(config.warmup_requests)
        simulator.run(warmup)
        segments = [[len(warmup), len(warmup)]]  # [entries taken from the stream, requests sent]
        counted = variant != FULLTEXT  # the feature cache's counters (the full-text model has none)
        with run_triton_server(models.repositories[variant], log_path=log_dir / f"{variant}-{share}.log") as server:
            # Exactly the first W requests, one at a time: the same warm-up for every variant.
            warm = run_closed_loop(TritonTransport(server.grpc_url, model), warmup, 1)
            rate = 1e6 / warm.percentile_us(50)  # requests/s at concurrency 1, without the connection set-up
            previous = None
            for concurrency in levels:
                window = window_requests(rate, grid, concurrency)
                # Throughput grows at most about linearly with concurrency: size the data file for that. The
                # warm-up ran on a cold cache, so after it the full growth allowance applies.
                growth = MAX_RATE_GROWTH if previous is None else min(max(concurrency / previous, 1.0), MAX_RATE_GROWTH)
                expected = rate * growth
                requests = stream.take(data_requests(window, concurrency, expected))
                path = write_perf_analyzer_data(requests, data_dir / f"{variant}-{share}-c{concurrency}.json")
                stats_before = read_statistics(server.grpc_url)
                counters_before = cache_counters(server.metrics_url) if counted else None
                t0 = time.monotonic()
                measured = run_perf_analyzer(
                    model, server.grpc_url, path, concurrency, window, data_dir,
                    timeout_s=max(600.0, 40 * len(requests) / max(rate, 1e-3)),
                )
                seconds = time.monotonic() - t0
                path.unlink()
                breakdown = statistics_delta(stats_before, read_statistics(server.grpc_url))
                sent = int(breakdown[model]["requests"])
                wrapped = sent > len(requests)  # perf_analyzer started the file again: some fresh texts repeated
                if wrapped:
                    self.progress.note(f"perf_analyzer sent {sent} requests from a file of {len(requests)} (wrapped)")
                segments.append([len(requests), sent])
                cache = _cache_delta(counters_before, cache_counters(server.metrics_url)) if counted else None
                simulated = simulator.run(sent_requests(requests, sent))
                result.points.append(Point(
                    llm_size=size, variant=variant, method=PERF_ANALYZER, unseen_share=share, concurrency=concurrency,
                    requests=sent, seconds=seconds, throughput=measured.throughput,
                    avg_latency_us=measured.avg_latency_us, p50_us=measured.p50_us, p90_us=measured.p90_us,
                    p95_us=measured.p95_us, p99_us=measured.p99_us, cache=cache, simulated=simulated.to_json(),
                    breakdown=breakdown, perf=measured.to_json(), wrapped=wrapped,
                    history=sum(segment[1] for segment in segments[:-1]), repeat=repeat,
                ))
                hit = f", cache hit rate {cache['hit_rate']:.1%}" if cache else ""
                self.progress.note(
                    f"c={concurrency:<3} {sent:>6} requests: {measured.throughput:9.1f} req/s, "
                    f"p99 {measured.p99_us / 1e3:9.1f} ms{hit}"
                )
                rate, previous = measured.throughput, concurrency
        result.segments[segment_key(repeat, variant, share)] = segments
        self.progress.finish(task)

    def _inprocess(self, models: SizeModels, result: SizeResult, repeat: int) -> None:
        """Replays the LARR headline stream (warm-up and every segment, in order) through the same models
        in-process; times the segments of concurrency 1 and the headline concurrency."""
        from larr.benchmarks.inprocess import InProcessPipeline, time_segment, workers_for

        size, grid, config = result.llm_size, self.config.grid(result.llm_size), self.config
        task = f"{_task_prefix(size, repeat)}/{INPROCESS}"
        share = config.headline_unseen
        self.progress.task(task, f"{size}: the same ONNX models in-process (no server), unseen {share:.0%}")
        segments = result.segments[segment_key(repeat, LARR, share)]
        stream = self._stream(share, repeat)
        pipeline = InProcessPipeline(models.repositories[LARR])
        for request in stream.take(segments[0][0]):  # the warm-up, computed like the server's
            pipeline.score(request)
        timed = {1, config.headline_concurrency}
        for concurrency, (taken, sent) in zip(grid.concurrency, segments[1:]):
            requests = sent_requests(stream.take(taken), sent)
            if concurrency not in timed:
                pipeline.advance(requests)
                continue
            batch = _served_batch(result, share, concurrency, repeat)
            timing = time_segment(pipeline, requests, batch, workers_for(concurrency, batch))
            result.points.append(Point(
                llm_size=size, variant=INPROCESS, method=IN_PROCESS, unseen_share=share, concurrency=concurrency,
                requests=timing.requests, seconds=timing.seconds, throughput=timing.throughput,
                avg_latency_us=timing.mean_latency_us, p50_us=timing.p50_us, p90_us=None, p95_us=None,
                p99_us=timing.p99_us, repeat=repeat, batch=batch, workers=timing.workers,
            ))
            self.progress.note(
                f"segment of c={concurrency}: {timing.throughput:9.1f} req/s in batches of {batch} x {timing.workers} threads, "
                f"mean {timing.mean_latency_us / 1e3:.2f} ms"
            )
        self.progress.finish(task)

    def _loadgen(self, models: SizeModels, result: SizeResult, repeat: int) -> None:
        """FastAPI (the same repository and runtime) and the Triton ensemble, each fresh, driven by the same Python generator."""
        from larr.benchmarks.fastapi_service import run_fastapi_service
        from larr.benchmarks.loadgen import HttpTransport, TritonTransport, run_closed_loop
        from larr.serving.server.process import run_triton_server

        size, grid, config = result.llm_size, self.config.grid(result.llm_size), self.config
        task = f"{_task_prefix(size, repeat)}/loadgen"
        share = config.headline_unseen
        self.progress.task(task, f"{size}: FastAPI vs Triton (same repository and runtime), same Python load generator, "
                                 f"concurrency {list(grid.loadgen_concurrency)}")
        # as many requests per level as perf_analyzer sent to the LARR ensemble at that concurrency
        segments = result.segments[segment_key(repeat, LARR, share)][1:]
        sent = {c: segment[1] for c, segment in zip(grid.concurrency, segments)}
        plan = [(c, sent.get(c, 4 * c)) for c in grid.loadgen_concurrency]

        def drive(variant: str, make_transport: Callable[[], object]) -> None:
            stream = self._stream(share, repeat)
            run_closed_loop(make_transport(), stream.take(config.warmup_requests), 1)
            for concurrency, count in plan:
                measured = run_closed_loop(make_transport(), stream.take(count), concurrency)
                row = measured.to_json()
                result.points.append(Point(
                    llm_size=size, variant=variant, method=LOADGEN, unseen_share=share, concurrency=concurrency,
                    requests=measured.requests, seconds=measured.seconds, throughput=measured.throughput,
                    avg_latency_us=row["avg_latency_us"], p50_us=row["p50_us"], p90_us=row["p90_us"],
                    p95_us=row["p95_us"], p99_us=row["p99_us"], repeat=repeat,
                ))
                self.progress.note(
                    f"{variant:<13} c={concurrency:<3} {measured.throughput:9.1f} req/s, "
                    f"p99 {row['p99_us'] / 1e3:9.1f} ms"
                )

        # the same repository (store, runtime) as the Triton ensemble below: the ratio compares servers
        with run_fastapi_service(models.repositories[LARR]) as url:
            drive(FASTAPI, lambda: HttpTransport(url))
        log = self.work / size / "logs" / f"{LARR_LOADGEN}.log"
        with run_triton_server(models.repositories[LARR], log_path=log) as server:
            drive(LARR_LOADGEN, lambda: TritonTransport(server.grpc_url, ENSEMBLE_NAME))
        self.progress.finish(task)

    def _long_run(self) -> dict[str, dict]:
        """Per unseen share, what a long-running server reaches: the feature cache replayed over
        ``LONG_RUN_REQUESTS`` requests of the stream, counted over the last quarter. Model-free (hits and
        token counts depend on the texts and the tokenizer only), so one number per share for every size."""
        from larr.tokenization import EmbeddingTokenizer

        tokenizer = EmbeddingTokenizer.from_directory(RunLayout(self.base.checkpoints).embedder_dir(CTR_LARR))
        whole = dataclasses.replace(tokenizer.config, max_length=self.config.fulltext_max_length)
        fulltext = EmbeddingTokenizer(tokenizer.tokenizer, whole)
        shares = sorted({share for size in self.config.llm_sizes for share in self.config.grid(size).unseen_shares})
        out = {}
        for share in shares:
            stream = self._stream(share)
            simulator = CacheSimulator(self.pools.features, tokenizer, fulltext, self.config.cache_capacity)
            simulator.run(stream.take(self.config.warmup_requests + LONG_RUN_REQUESTS * 3 // 4))
            last = simulator.run(stream.take(LONG_RUN_REQUESTS // 4))
            # last.to_json()["requests"]: the requests counted (the last quarter)
            out[str(share)] = {
                **last.to_json(), "after_requests": LONG_RUN_REQUESTS, "token_bound_vs_fulltext": last.token_bound(),
            }
        self.progress.note("long-running cache (simulated, last quarter of "
                           f"{LONG_RUN_REQUESTS} requests): " + ", ".join(
                               f"{float(s):.0%} unseen -> {v['hit_rate']:.1%} hits" for s, v in out.items()))
        return out

    def _saturation(self, models: SizeModels, result: SizeResult) -> None:
        """The embedder kept busy with full batches: the repository's fp32 graph and, where it runs on ONNX
        Runtime's CPU provider, its int8 conversion (``larr export --embedder-precision int8``'s recipe) on the
        same batches, the two interleaved in SATURATION_ROUNDS rounds so that load changes hit both alike."""
        from larr.benchmarks.inprocess import SaturationProbe, feature_texts, gemm_peak, saturation_sum

        size, config = result.llm_size, self.config
        task = f"{size}/saturation"
        batch = config.saturation_batch
        repository = models.repositories[LARR]
        int8 = self._int8_embedder(models) if (config.runtime, self.machine.device) == (ONNX_RUNTIME, "cpu") else None
        self.progress.task(task, f"{size}: embedder at saturation (batches of {batch} scene-feature texts"
                                 f"{', fp32 and int8 interleaved' if int8 else ''})")
        requests = self._stream(config.headline_unseen).take(max(64, 4 * batch))
        texts = feature_texts(requests, self.pools.features)
        graphs = {"fp32": None, **({"int8": int8} if int8 else {})}  # name -> graph (None: the repository's)
        # each graph loaded once (the 135M shape's fp32 session alone is ~540 MB), then measured in turns
        probes = {name: SaturationProbe(repository, texts, batch, graph) for name, graph in graphs.items()}
        seconds = config.saturation_seconds / SATURATION_ROUNDS
        runs: dict[str, list] = {name: [] for name in graphs}
        for round_ in range(SATURATION_ROUNDS):
            order = list(graphs) if round_ % 2 == 0 else list(graphs)[::-1]
            for name in order:
                runs[name].append(probes[name].measure(seconds))
        del probes
        saturation = saturation_sum(runs["fp32"])
        # the peak again, next to the saturation run: on a shared machine the one taken at the start of a long run
        # can be far below what the cores do minutes later (an MFU above 1 was seen); the summary takes the best
        peak = gemm_peak(self.machine.device, config.gemm_size)
        result.saturation = {
            **saturation.to_json(),
            "flops_per_token": _flops_per_token(models, saturation.mean_padded_length),
            "gemm_peak_flops": peak.flops,
            "rounds": SATURATION_ROUNDS,
        }
        self.progress.note(f"{saturation.tokens_per_s:,.0f} tokens/s ({saturation.texts_per_s:,.1f} texts/s)")
        if int8:
            int8_saturation = saturation_sum(runs["int8"])
            # per round: int8 tokens/s / fp32 tokens/s of the same round (paired)
            speedups = [i.tokens_per_s / f.tokens_per_s for f, i in zip(runs["fp32"], runs["int8"])]
            result.saturation["int8"] = {**int8_saturation.to_json(), "speedup_by_round": speedups, "graph": str(int8)}
            self.progress.note(f"int8: {int8_saturation.tokens_per_s:,.0f} tokens/s, "
                               f"{int8_saturation.tokens_per_s / saturation.tokens_per_s:.2f}x fp32")
        self.progress.finish(task)

    def _int8_embedder(self, models: SizeModels) -> Path:
        """The int8 conversion of the LARR repository's embedder graph, made once per export (kept beside it)."""
        from larr.export.embedder_precision import quantize_int8

        fp32 = models.repositories[LARR] / EMBEDDER_MODEL / VERSION / ONNX_FILE
        int8 = models.run_dir.parent / "int8" / "embedder.onnx"
        if not int8.exists() or int8.stat().st_mtime < fp32.stat().st_mtime:
            self.progress.note(f"quantising {fp32} to int8 -> {int8}")
            quantize_int8(fp32, int8)
        return int8


def _served_batch(result: SizeResult, share: float, concurrency: int, repeat: int) -> int:
    """Requests per execute of the served ``ctr`` step at the LARR point (share, concurrency, repeat),
    rounded: the batch the in-process replay uses, so both sides batch alike (1 where unknown)."""
    for point in result.points:
        if (point.variant, point.method, point.concurrency, point.repeat) == (LARR, PERF_ANALYZER, concurrency, repeat) \
                and abs(point.unseen_share - share) < 1e-9:
            ctr = (point.breakdown or {}).get(CTR_MODEL) or {}
            return max(1, round(ctr.get("avg_batch", 1.0)))
    return 1


def _precompute(repository: Path) -> dict | None:
    """What the export recorded about building the repository's scene table (None: no table, or an older export)."""
    index = repository / FEATURE_CACHE_MODEL / "1" / SCENE_TABLE_INDEX_FILE
    if not index.exists():
        return None
    return json.loads(index.read_text(encoding="utf-8")).get("precompute")


def segment_key(repeat: int, variant: str, share: float) -> str:
    """The key of one sweep's segments in ``SizeResult.segments``."""
    return f"r{repeat}/{variant}/{share}"


def _task_prefix(size: str, repeat: int) -> str:
    return f"{size}/r{repeat}"


def _require_onnxruntime_cuda() -> None:
    """On a GPU host every model runs on the GPU; under runtime onnxruntime the python backends need ONNX
    Runtime's CUDA provider (runtime torch needs only the torch that sees the GPU)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise BenchSetupError(
            "this host has a CUDA GPU but onnxruntime has no CUDAExecutionProvider: pip install onnxruntime-gpu "
            "(the GPU variants run the exported ONNX models with it), serve PyTorch instead with --runtime torch, "
            "or benchmark the CPU with --device cpu"
        )


def _flops_per_token(models: SizeModels, context: float) -> float:
    from larr.benchmarks.inprocess import forward_flops_per_token

    return forward_flops_per_token(models.parameters, models.encoder, context)


def sent_requests(entries: list, sent: int) -> list:
    """What perf_analyzer sent from a data file of ``entries``: the first ``sent``, cycling if it wrapped."""
    if not entries:
        raise ValueError("an empty data file sends nothing")
    return [entries[i % len(entries)] for i in range(sent)]


def _cache_delta(before: dict[str, float] | None, after: dict[str, float]) -> dict:
    before = before or {}
    hits = after.get("hits_total", 0.0) - before.get("hits_total", 0.0)
    misses = after.get("misses_total", 0.0) - before.get("misses_total", 0.0)
    # misses that waited for another batch's embedder call: store misses, but embedded once (miss_embedder)
    joined = after.get("joined_total", 0.0) - before.get("joined_total", 0.0)
    # fresh_text_policy deadline: misses answered with the unseen-text row because their embedding came too late
    # (counted like misses); the rest were answered with their own embedding
    late = after.get("deadline_fallbacks_total", 0.0) - before.get("deadline_fallbacks_total", 0.0)
    lookups = hits + misses
    return {"hits": int(hits), "misses": int(misses), "joined": int(joined), "hit_rate": hits / lookups if lookups else 0.0,
            "deadline_fallbacks": int(late), "own_embedding_share": 1.0 - late / misses if misses else None}


def _config_json(config: BenchConfig) -> dict:
    from dataclasses import asdict

    out = asdict(config)
    return json.loads(json.dumps(out, default=str))


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    packages = ("larr", "torch", "transformers", "onnxruntime", "tritonclient", "nvidia-pytriton", "fastapi", "uvicorn")
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
