"""In-process references: the served LARR pipeline without a server, the embedder at saturation, and the
machine's fp32 matmul peak.

* :class:`InProcessPipeline` runs the *same* exported repository's pieces -- the feature cache
  (``SceneFeatureCache``), the embedder and CTR graphs through the adapters' own runtimes
  (``larr.serving.runtime.load_runtime``, configured from the same ``config.pbtxt``) -- in this
  process, one batch of requests at a time, as one execute of each step would (batch 1 = one request
  at a time). Triton's time per request minus this one, at the batch size Triton formed, is the
  serving overhead.
* :func:`embedder_saturation` keeps the embedder busy with full batches of scene-feature texts and
  counts tokens/s; :func:`forward_flops_per_token` turns that into FLOP/s, and :func:`gemm_peak`
  measures what the machine can do on a large fp32 GEMM in the same run, for the model FLOPs
  utilisation (MFU).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from larr.benchmarks.models import EncoderShape, ParameterCount
from larr.benchmarks.workload import BenchRequest
from larr.contract import (
    CTR_MODEL,
    EMBEDDER_MODEL,
    FEATURE_CACHE_MODEL,
    ITEM_REQUEST,
    PARAM_EMBEDDER_MAX_BATCH,
    PARAM_EMBEDDER_VERSION,
    PARAM_SCENE_FEATURES,
)
from larr.export.options import CONFIG_FILE, VERSION
from larr.serving.ctr_batch import score_batch
from larr.serving.ctr_request import CTRLimits, CTRRequest
from larr.serving.errors import RequestError
from larr.serving.feature_cache import SceneFeatureCache
from larr.serving.runtime import (
    ONNX_RUNTIME,
    OnnxRuntime,
    Runtime,
    RuntimeSpec,
    load_runtime,
    model_parameters,
    tensor_names,
)
from larr.serving.stores.factory import make_store
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer


def model_config(repository: Path, model: str) -> dict[str, Any]:
    """A model's ``config.pbtxt`` as the JSON dict Triton hands the python models (``args["model_config"]``)."""
    config = text_format.Parse((Path(repository) / model / CONFIG_FILE).read_text(encoding="utf-8"), mc.ModelConfig())
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


class InProcessPipeline:
    """The LARR ensemble's work for one request, in this process: cache -> embedder (misses) -> CTR.

    Safe to call from several threads (the FastAPI baseline does): the store is touched under one lock, the
    embedder and CTR runtimes (ONNX Runtime sessions release the GIL) run outside it. Two threads that miss the
    same text both embed it, as two Triton instances would.
    """

    def __init__(self, repository: Path):
        repository = Path(repository)
        params = model_parameters(model_config(repository, FEATURE_CACHE_MODEL))
        version_dir = repository / FEATURE_CACHE_MODEL / VERSION
        self.cache = SceneFeatureCache.from_directory(
            version_dir,
            json.loads(params[PARAM_SCENE_FEATURES]),
            # the store the server builds from the same config and folder: warm from the scene table, as it is
            make_store(params, version_dir, EmbeddingTokenizer.from_directory(version_dir).max_text_chars),
            params[PARAM_EMBEDDER_VERSION],
        )
        self.max_batch = int(params[PARAM_EMBEDDER_MAX_BATCH])
        embedder_config = model_config(repository, EMBEDDER_MODEL)
        self.embedding_dim = int(embedder_config["output"][0]["dims"][-1])  # D
        self.embedder = load_runtime(repository / EMBEDDER_MODEL / VERSION, embedder_config)
        ctr_config = model_config(repository, CTR_MODEL)
        # a batching ctr model serves the batched graph: score through the same code as its adapter
        self.ctr_batched = ctr_config["max_batch_size"] > 0
        self.ctr_limits = CTRLimits.from_model_config(ctr_config)
        extra = (ITEM_REQUEST,) if self.ctr_batched else ()
        self.ctr = load_runtime(repository / CTR_MODEL / VERSION, ctr_config, extra_inputs=extra)
        self._store_lock = threading.Lock()

    def score(self, request: BenchRequest) -> np.ndarray:
        """CTR (N,) float32 of one request; raises the request's RequestError if it is invalid."""
        (ctr,) = self.score_many([request])
        return ctr

    def score_many(self, requests: Sequence[BenchRequest]) -> list[np.ndarray]:
        """CTRs of a batch of requests, computed as one execute of each served step computes them: one store
        lookup, ONE embedder call for the misses of all (split at its max batch), one run of the batched ctr
        graph. Raises the first invalid request's RequestError."""
        parsed = [self.cache.parse(list(request.scene)) for request in requests]
        with self._store_lock:
            batch = self.cache.begin(parsed)
        if batch.missing:
            input_ids, attention_mask = self.cache.tokenize(batch.missing)  # (M, T) each
            parts = [
                np.asarray(self.embedder.run([input_ids[part], attention_mask[part]])[0])
                for part in (slice(s, s + self.max_batch) for s in range(0, len(input_ids), self.max_batch))
            ]
            with self._store_lock:
                self.cache.complete(batch, np.concatenate(parts))  # (M, D)
        with self._store_lock:
            results = batch.results()
        scored: list[CTRRequest] = []
        for request, result in zip(requests, results):
            if isinstance(result, RequestError):
                raise result
            scene_emb, scene_ids = result  # (K, D), (K,)
            user = np.array([request.user_id], dtype=np.int64)
            scored.append(CTRRequest(scene_emb, scene_ids, user, np.array(request.item_ids, dtype=np.int64)))
        if not self.ctr_batched:
            return [np.asarray(self.ctr.run([r.scene_emb, r.scene_ids, r.user_id, r.item_ids])[0]) for r in scored]
        ctrs = score_batch(self.ctr.run_numpy, scored, self.ctr_limits)
        for ctr in ctrs:
            if isinstance(ctr, RequestError):
                raise ctr
        return ctrs


    def advance(self, requests: Sequence[BenchRequest]) -> None:
        """Put into the cache what ``requests`` would, without computing anything (for segments that are
        replayed but not timed: a hit costs the same whatever the cached vector holds)."""
        for request in requests:
            batch = self.cache.begin([self.cache.parse(list(request.scene))])
            if batch.missing:
                self.cache.complete(batch, np.zeros((len(batch.missing), self.embedding_dim), dtype=np.float32))


@dataclass(frozen=True)
class SegmentTiming:
    """In-process scoring of one segment of requests, ``batch`` requests per call, ``workers`` calls at a time."""

    requests: int
    batch: int
    seconds: float
    mean_latency_us: float
    p50_us: float
    p99_us: float
    workers: int = 1

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "throughput": self.throughput}


def workers_for(concurrency: int, batch: int) -> int:
    """Calls in flight when ``concurrency`` requests are outstanding in batches of ``batch``: what the
    in-process replay runs at once, so that it keeps as many requests in flight as the served point."""
    return max(1, math.ceil(concurrency / max(1, batch)))


def time_segment(pipeline: InProcessPipeline, requests: Sequence[BenchRequest], batch: int = 1, workers: int = 1) -> SegmentTiming:
    """Score ``requests`` in consecutive batches of ``batch`` (the last may be shorter), ``workers`` threads
    each taking the next batch when done with one (ONNX Runtime releases the GIL, so they overlap on the
    cores as Triton's model instances do); every request's latency is its batch's time (it waits for the
    whole batch, as in a served execute)."""
    if not requests:
        raise ValueError("no requests to time")
    if batch < 1 or workers < 1:
        raise ValueError(f"batch and workers must be >= 1, got {batch} and {workers}")
    firsts = list(range(0, len(requests), batch))
    latencies = np.empty(len(requests))
    next_batch = iter(firsts)  # shared: next() on a list iterator is atomic under the GIL
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for first in next_batch:
                chunk = requests[first : first + batch]
                t0 = time.perf_counter()
                pipeline.score_many(chunk)
                latencies[first : first + len(chunk)] = time.perf_counter() - t0
        except BaseException as error:  # surfaced in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=work, name=f"inprocess-{n}") for n in range(min(workers, len(firsts)))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return SegmentTiming(
        requests=len(requests),
        batch=batch,
        seconds=seconds,
        mean_latency_us=float(latencies.mean() * 1e6),
        p50_us=float(np.percentile(latencies, 50) * 1e6),
        p99_us=float(np.percentile(latencies, 99) * 1e6),
        workers=len(threads),
    )


# --------------------------------------------------------------------------------------------- saturation and MFU


@dataclass(frozen=True)
class Saturation:
    """The embedder kept busy with full batches."""

    batch: int  # texts per call
    calls: int
    seconds: float
    tokens: int  # real tokens (<emb> included), what tokens/s counts
    padded_tokens: int  # positions computed, padding included
    mean_padded_length: float  # T of the batches: the attention context in the FLOPs count

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def texts_per_s(self) -> float:
        return self.batch * self.calls / self.seconds

    def to_json(self) -> dict:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s, "texts_per_s": self.texts_per_s}


def feature_texts(requests: Sequence[BenchRequest], features: Sequence[str]) -> list[str]:
    """The per-feature embedder inputs of ``requests`` (what the cache sends on a miss), distinct, in order."""
    seen: dict[str, None] = {}
    for request in requests:
        for feature, text in zip(features, request.scene):
            seen.setdefault(format_scene_feature(feature, text), None)
    return list(seen)


class SaturationProbe:
    """One embedder graph, loaded once, and ``texts`` tokenised into consecutive batches of ``batch``: each
    :meth:`measure` keeps it busy for a while (interleaved rounds reuse the loaded session).

    ``graph``: another ONNX file of the same embedder (e.g. its int8 conversion) run in place of the
    repository's, in a session configured as the repository's config says."""

    def __init__(self, repository: Path, texts: Sequence[str], batch: int, graph: Path | None = None):
        if len(texts) < batch:
            raise ValueError(f"need at least {batch} texts for a batch, got {len(texts)}")
        self.batch = batch
        self.runtime = _embedder_runtime(Path(repository), graph)
        tokenizer = EmbeddingTokenizer.from_directory(Path(repository) / FEATURE_CACHE_MODEL / VERSION)
        self.batches = [tokenizer(texts[s : s + batch]) for s in range(0, len(texts) - batch + 1, batch)]  # (B, T) pairs
        # run_numpy: the result on the host, so a CUDA runtime (torch launches asynchronously) is timed to the end
        self.runtime.run_numpy(list(self.batches[0]))  # warm-up: allocations, thread pools

    def measure(self, seconds: float) -> Saturation:
        """Embed the batches (cycling) until ``seconds`` have passed, at least two timed calls."""
        calls = tokens = padded = 0
        start = time.perf_counter()
        while True:
            input_ids, attention_mask = self.batches[calls % len(self.batches)]
            self.runtime.run_numpy([input_ids, attention_mask])
            calls += 1
            tokens += int(attention_mask.sum())
            padded += int(attention_mask.size)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and calls >= 2:
                break
        return Saturation(self.batch, calls, elapsed, tokens, padded, padded / (calls * self.batch))


def embedder_saturation(
    repository: Path, texts: Sequence[str], batch: int, seconds: float, graph: Path | None = None
) -> Saturation:
    """Embed ``texts`` in consecutive batches of ``batch`` (cycling) until ``seconds`` have passed (at least
    two timed calls, after one untimed warm-up call), with the repository's embedder and tokenizer (or
    ``graph``, see :class:`SaturationProbe`)."""
    return SaturationProbe(repository, texts, batch, graph).measure(seconds)


def _embedder_runtime(repository: Path, graph: Path | None) -> Runtime:
    config = model_config(repository, EMBEDDER_MODEL)
    if graph is None:
        return load_runtime(repository / EMBEDDER_MODEL / VERSION, config)
    spec = RuntimeSpec.from_model_config(config)
    if spec.runtime != ONNX_RUNTIME:
        raise ValueError(f"{graph}: an ONNX graph needs runtime {ONNX_RUNTIME!r}, the repository's embedder runs {spec.runtime!r}")
    return OnnxRuntime(graph, *tensor_names(config), spec)


def saturation_sum(runs: Sequence[Saturation]) -> Saturation:
    """Several saturation runs of one graph (same batch) counted as one."""
    calls, padded = sum(r.calls for r in runs), sum(r.padded_tokens for r in runs)
    return Saturation(runs[0].batch, calls, sum(r.seconds for r in runs), sum(r.tokens for r in runs), padded,
                      padded / (calls * runs[0].batch))


def forward_flops_per_token(parameters: ParameterCount, encoder: EncoderShape, context: float) -> float:
    """Forward FLOPs per token, ``2 N + 2 n_layer n_ctx d_attn`` (Kaplan et al. 2020, table 1): N the
    non-embedding parameters (the embedding table is a lookup), n_ctx the attention context."""
    d_attn = encoder.num_attention_heads * encoder.head_dim
    return 2.0 * parameters.non_embedding + 2.0 * encoder.num_hidden_layers * context * d_attn


def model_flops_utilisation(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    if peak_flops <= 0:
        raise ValueError(f"peak FLOP/s must be > 0, got {peak_flops}")
    return tokens_per_s * flops_per_token / peak_flops


@dataclass(frozen=True)
class GemmPeak:
    size: int
    flops: float  # best FLOP/s over the repetitions
    device: str
    threads: int

    def to_json(self) -> dict:
        return asdict(self)


def gemm_peak(device: str = "cpu", size: int = 4096, seconds: float = 3.0) -> GemmPeak:
    """Best fp32 FLOP/s of ``size``x``size`` matmuls on all cores (CPU) or the GPU (TF32 off: fp32 proper)."""
    import torch

    torch_device = torch.device("cuda" if device == "cuda" else "cpu")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(torch_device)
    b = torch.randn(size, size, generator=generator).to(torch_device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        a @ b  # warm-up
        sync()
        best = 0.0
        deadline = time.perf_counter() + seconds
        repetitions = 0
        while repetitions < 3 or time.perf_counter() < deadline:
            t0 = time.perf_counter()
            a @ b
            sync()
            best = max(best, 2.0 * size**3 / (time.perf_counter() - t0))
            repetitions += 1
    return GemmPeak(size=size, flops=best, device=device, threads=torch.get_num_threads())
