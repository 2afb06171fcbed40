"""What ``larr bench`` measures: the LLM sizes, the variants, the grid, and how long each point runs.

The profiles share one code path and differ only in size: ``full`` (the published grid, sized to
finish in under 30 minutes on a 2-core CPU machine), ``quick`` (a few minutes, for development),
``smoke`` (the tiny model only, seconds per point; the integration test), ``store`` (the scene-store
headline) and ``gpu`` (the 0.5B shape served by PyTorch on one CUDA GPU; ``benchmarks/gpu/gpu_check.sh``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from larr.export.embedder_precision import EmbedderPrecision
from larr.serving.fresh_text import DEFAULT_BUSY_SHARE, DEFAULT_MISS_DEADLINE_MS
from larr.serving.runtime import ONNX_RUNTIME, RUNTIMES
from larr.serving.stores.factory import DEFAULT_CACHE_CAPACITY

# The embedder precisions the CPU bench can serve (fp16 is a GPU graph); fp32 is the export's own graph.
BENCH_PRECISIONS = (EmbedderPrecision.FP32.value, EmbedderPrecision.INT8.value)

TINY = "tiny"
SMOLLM_135M = "smollm-135m"
QWEN25_05B = "qwen2.5-0.5b"

# Variants, as they appear in results.json / points.csv.
LARR = "larr"  # the ensemble with the feature cache on
CACHE_OFF = "larr_cache_off"  # the same repository with cache_capacity=0: every feature embedded every time
FULLTEXT = "fulltext"  # the LLM reads the whole concatenated scene per request, then the full-text CTR head
FULLTEXT_MAX_LENGTH = 160  # tokens of a whole-scene text, <emb> included (the synthetic scenes need ~32)
INPROCESS = "inprocess"  # the LARR pipeline's ONNX models called in-process, no server
FASTAPI = "fastapi"  # FastAPI/uvicorn + PyTorch with a dict cache
LARR_LOADGEN = "larr_loadgen"  # the Triton ensemble driven by the same Python load generator as FASTAPI
TRITON_VARIANTS = (LARR, CACHE_OFF, FULLTEXT)


@dataclass(frozen=True)
class LLMShape:
    """The LLM behind the embedder. ``trained`` shapes come from the run's checkpoints; the others are
    built with random weights from a ``transformers`` config (speed does not depend on weight values)."""

    name: str
    label: str
    trained: bool = False
    architecture: str = "llama"  # llama | qwen2 (random shapes only)
    hidden_size: int = 0
    num_hidden_layers: int = 0
    num_attention_heads: int = 0
    num_key_value_heads: int = 0
    intermediate_size: int = 0
    vocab_size: int = 0
    projection_dim: int = 64  # D, the size the trained CTR heads read

    def approximate_parameters(self) -> tuple[int, int]:
        """(non-embedding, embedding) parameters of a random shape from its config (0, 0 for trained ones):
        attention q/o (2 h^2) and k/v (2 h h_kv) plus the gated MLP (3 h i) per layer; biases and norms
        left out. For time estimates; the reported counts are read from the saved weights."""
        if self.trained:
            return 0, 0
        kv = self.num_key_value_heads * (self.hidden_size // self.num_attention_heads)
        h, i = self.hidden_size, self.intermediate_size
        return self.num_hidden_layers * (2 * h * h + 2 * h * kv + 3 * h * i), self.vocab_size * h

    def config_kwargs(self) -> dict[str, int | bool]:
        """Keyword arguments of ``LlamaConfig`` / ``Qwen2Config`` for this shape."""
        return {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": True,
        }


LLM_SHAPES: dict[str, LLMShape] = {
    TINY: LLMShape(name=TINY, label="trained tiny LLM (the run's checkpoints)", trained=True),
    SMOLLM_135M: LLMShape(
        name=SMOLLM_135M, label="SmolLM-135M shape, random weights", architecture="llama",
        hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        intermediate_size=1536, vocab_size=49152,
    ),
    QWEN25_05B: LLMShape(
        name=QWEN25_05B, label="Qwen2.5-0.5B shape, random weights", architecture="qwen2",
        hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936,
    ),
}


@dataclass(frozen=True)
class SizeGrid:
    """The measurement grid of one LLM size."""

    concurrency: tuple[int, ...]  # perf_analyzer sweep of LARR (cache on) at the headline unseen share
    baseline_concurrency: tuple[int, ...]  # ... of cache-off and the full-text baseline (headline share)
    unseen_shares: tuple[float, ...]  # LARR is also measured at each of these shares ...
    share_concurrency: tuple[int, ...]  # ... at these concurrency levels
    loadgen_concurrency: tuple[int, ...]  # FastAPI vs Triton with the Python load generator
    target_seconds: float  # aim for this long per measured point (perf_analyzer: 3 windows)
    min_window: int  # requests per perf_analyzer window: at least this (and at least the concurrency)
    max_window: int  # ... and at most this


@dataclass(frozen=True)
class BenchConfig:
    """Everything one ``larr bench`` run needs; the defaults are the published grid (profile ``full``)."""

    checkpoints: Path = field(default=Path("runs/demo/run"), metadata={"help": "trained run (`make demo` makes it)"})
    out: Path = field(default=Path("benchmarks/results"), metadata={"help": "results go to OUT/<machine>/"})
    work: Path = field(default=Path("runs/bench"), metadata={"help": "random-weight LLMs and exported repositories"})
    llm_sizes: tuple[str, ...] = (TINY, SMOLLM_135M, QWEN25_05B)
    grids: dict[str, SizeGrid] = field(default_factory=dict)  # per LLM size; see PROFILES
    headline_size: str = SMOLLM_135M
    headline_concurrency: int = 16
    headline_unseen: float = 0.1
    candidates: int = field(default=100, metadata={"help": "N candidate items per request"})
    zipf_exponent: float = field(default=1.1, metadata={"help": "P(rank r) ~ r^-s over each feature's seen texts"})
    warmup_requests: int = field(default=32, metadata={"help": "the same first W requests warm every variant"})
    repeats: int = field(default=1, metadata={
        "help": "measure every point this many times, each on a fresh server with its own request stream (seed + "
                "repeat); summary.json gives each ratio's mean and 95 % interval (`<key>_ci95`)"})
    fulltext_max_length: int = field(default=FULLTEXT_MAX_LENGTH, metadata={"help": "tokens of a whole-scene text, <emb> included"})
    cache_capacity: int = DEFAULT_CACHE_CAPACITY
    fresh_text_policy: str = field(default="strict", metadata={
        "help": "strict | async | deadline: how the LARR ensemble answers texts no store holds (larr.serving.fresh_text)"})
    miss_deadline_ms: float = field(default=DEFAULT_MISS_DEADLINE_MS, metadata={
        "help": "deadline: the longest a request waits for its fresh texts' embeddings (larr export --miss-deadline-ms)"})
    background_busy_share: float = field(default=DEFAULT_BUSY_SHARE, metadata={
        "help": "async: the largest share of wall time the background embedder may spend embedding (larr export "
                "--background-busy-share)"})
    embedder_precision: str = field(default=EmbedderPrecision.FP32.value, metadata={
        "help": "fp32 | int8: the served embedder graph of LARR and of the full-text baseline alike (larr export "
                "--embedder-precision; int8 needs runtime onnxruntime on a CPU)"})
    embedder_width_ratio: float = field(default=1.0, metadata={
        "help": "random-weight sizes: serve the embedder pruned in one shot to this share of its widths (hidden, "
                "MLP, query heads; training/prune.py), the cost of what `larr train distill --width-ratio` makes; "
                "LARR and the full-text baseline alike, in folders of their own; 1 = unpruned"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    runtime: str = field(default=ONNX_RUNTIME, metadata={
        "help": "onnxruntime | torch: what the python backends run the embedder and CTR heads with (torch: a CUDA "
                "host needs no onnxruntime-gpu); the full-text baseline is served by the same embedder model"})
    seed: int = 2024  # the random-weight LLMs' weights, and by default the request streams'
    stream_seed: int | None = field(default=None, metadata={
        "help": "request streams are seeded STREAM_SEED + repeat (default: the model seed, 2024, as in every published "
                "run, so two runs replay the same streams); another value makes a rerun's streams independent, and "
                "reuses the exported models"})
    saturation_seconds: float = 6.0  # in-process embedder throughput, per LLM size
    saturation_batch: int = 32  # texts per embedder call at saturation
    gemm_size: int = 4096
    rebuild: bool = False  # re-export the repositories even when the work folder has them
    skip: tuple[str, ...] = ()  # parts to leave out: "fastapi", "inprocess", "saturation"

    def stream_seed_of(self, repeat: int) -> int:
        """The request stream of one repeat: ``stream_seed + repeat`` (``seed`` when no stream seed is given)."""
        return (self.seed if self.stream_seed is None else self.stream_seed) + repeat

    def grid(self, size: str) -> SizeGrid:
        try:
            return self.grids[size]
        except KeyError:
            known = sorted(self.grids)
            raise ValueError(f"no measurement grid for LLM size {size!r}; grids exist for {known}") from None


# The published grid, sized for < 30 minutes on a 2-core CPU machine, where a 0.5B-shape request costs
# about a second: the full sweep for the tiny model, fewer levels for the large shapes.
_FULL_TINY = SizeGrid(
    concurrency=(1, 2, 4, 8, 16, 32, 64), baseline_concurrency=(1, 2, 4, 8, 16, 32, 64),
    unseen_shares=(0.0, 0.1, 0.5), share_concurrency=(1, 4, 16, 64), loadgen_concurrency=(1, 16),
    target_seconds=4.0, min_window=32, max_window=5_000,
)
_FULL_135M = SizeGrid(
    concurrency=(1, 4, 16), baseline_concurrency=(1, 4, 16), unseen_shares=(0.0, 0.1, 0.5), share_concurrency=(16,),
    loadgen_concurrency=(16,), target_seconds=8.0, min_window=8, max_window=2_000,
)
_FULL_05B = SizeGrid(
    concurrency=(1, 4, 16), baseline_concurrency=(1, 16), unseen_shares=(0.0, 0.1, 0.5), share_concurrency=(16,),
    loadgen_concurrency=(16,), target_seconds=8.0, min_window=8, max_window=2_000,
)
_QUICK = SizeGrid(
    concurrency=(1, 16), baseline_concurrency=(1, 16), unseen_shares=(0.0, 0.1, 0.5), share_concurrency=(16,),
    loadgen_concurrency=(16,), target_seconds=2.0, min_window=8, max_window=1_000,
)
# Issue "scene embeddings off the request path": the SmolLM-135M shape at 0 %, 1 % and 10 % fresh texts, warm
# from the scene table the export writes (every training text), concurrency 1 and 16.
_STORE_135M = SizeGrid(
    concurrency=(1, 16), baseline_concurrency=(1, 16), unseen_shares=(0.0, 0.01, 0.1), share_concurrency=(16,),
    loadgen_concurrency=(16,), target_seconds=4.0, min_window=8, max_window=2_000,
)
# The GPU profile: one CUDA host with torch but neither onnxruntime-gpu nor TensorRT, within 8 minutes of device
# time: the Qwen2.5-0.5B shape served by PyTorch at 1 % and 10 % fresh texts, concurrency 16, warm from
# the scene table. Concurrency 1 is measured too (the profile check asks for it; it is the latency floor).
_GPU_05B = SizeGrid(
    concurrency=(1, 16), baseline_concurrency=(16,), unseen_shares=(0.01, 0.1), share_concurrency=(16,),
    loadgen_concurrency=(16,), target_seconds=4.0, min_window=16, max_window=5_000,
)
_SMOKE = SizeGrid(
    concurrency=(1, 4), baseline_concurrency=(4,), unseen_shares=(0.1,), share_concurrency=(4,),
    loadgen_concurrency=(4,), target_seconds=1.0, min_window=16, max_window=200,
)

PROFILES: dict[str, BenchConfig] = {
    "full": BenchConfig(grids={TINY: _FULL_TINY, SMOLLM_135M: _FULL_135M, QWEN25_05B: _FULL_05B}),
    "quick": BenchConfig(
        llm_sizes=(TINY, SMOLLM_135M), grids={TINY: _QUICK, SMOLLM_135M: _QUICK, QWEN25_05B: _QUICK},
        warmup_requests=16, saturation_seconds=2.0, gemm_size=2048,
    ),
    "store": BenchConfig(
        llm_sizes=(SMOLLM_135M,), headline_size=SMOLLM_135M, headline_unseen=0.01, grids={SMOLLM_135M: _STORE_135M},
        repeats=3,
    ),
    # One repeat: the 0.5B export (ONNX for the version digest, the scene table) and four fresh servers per repeat
    # fill most of the 8 minutes; `--repeats 2` where a run has shown the time for it. FastAPI, the in-process
    # replay and the saturation run need no ONNX Runtime CUDA under runtime torch, but are left out for time.
    "gpu": BenchConfig(
        llm_sizes=(QWEN25_05B,), headline_size=QWEN25_05B, headline_unseen=0.1, grids={QWEN25_05B: _GPU_05B},
        device="cuda", runtime="torch", repeats=1, skip=("fastapi", "inprocess", "saturation"),
    ),
    "smoke": BenchConfig(
        llm_sizes=(TINY,), headline_size=TINY, headline_concurrency=4, grids={TINY: _SMOKE}, warmup_requests=8,
        saturation_seconds=0.5, saturation_batch=8, gemm_size=512,
    ),
}


def with_headline_concurrency(grid: SizeGrid, old: int, new: int) -> SizeGrid:
    """``grid`` with the headline concurrency level ``old`` replaced by ``new`` in every sweep (concurrency 1, the
    latency floor, stays): how ``larr bench --headline-concurrency`` measures the headline at another load."""
    def swap(levels: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted({new if level == old else level for level in levels}))

    return replace(grid, **{name: swap(getattr(grid, name)) for name in (
        "concurrency", "baseline_concurrency", "share_concurrency", "loadgen_concurrency")})


def profile(name: str, **overrides) -> BenchConfig:
    """The named profile with ``overrides`` (BenchConfig field -> value) applied."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; one of {sorted(PROFILES)}")
    config = replace(PROFILES[name], **overrides)
    unknown = [size for size in config.llm_sizes if size not in LLM_SHAPES]
    if unknown:
        raise ValueError(f"unknown LLM size(s) {unknown}; known: {sorted(LLM_SHAPES)}")
    if config.runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {config.runtime!r}")
    if config.embedder_precision not in BENCH_PRECISIONS:
        raise ValueError(f"embedder_precision must be one of {BENCH_PRECISIONS}, got {config.embedder_precision!r}")
    if not 0.0 < config.embedder_width_ratio <= 1.0:
        raise ValueError(f"embedder_width_ratio must be in (0, 1], got {config.embedder_width_ratio}")
    trained = [size for size in config.llm_sizes if LLM_SHAPES[size].trained]
    if config.embedder_width_ratio != 1.0 and trained:
        raise ValueError(f"embedder_width_ratio applies to random-weight sizes; {trained} is the trained run "
                         "(`larr train distill` makes its narrower embedder): choose --llm-sizes without it")
    if config.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {config.repeats}")
    if config.headline_size not in config.llm_sizes:
        raise ValueError(f"the headline size {config.headline_size!r} is not among the measured {config.llm_sizes}")
    for size in config.llm_sizes:
        grid = config.grid(size)
        for name in ("concurrency", "baseline_concurrency", "share_concurrency", "loadgen_concurrency"):
            levels = getattr(grid, name)
            if config.headline_concurrency not in levels:
                raise ValueError(f"{size}: headline concurrency {config.headline_concurrency} is not in {name} {levels}")
        if 1 not in grid.concurrency:
            raise ValueError(f"{size}: concurrency 1 is needed (serving overhead at concurrency 1), got {grid.concurrency}")
        if config.headline_unseen not in grid.unseen_shares:
            raise ValueError(f"{size}: the headline unseen share {config.headline_unseen} is not in {grid.unseen_shares}")
    return config
