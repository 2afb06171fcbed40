"""What ``larr export`` is asked for and what it learns, as data: the options (the ``larr export`` flags), the facts
about the exported models and the dataset that the configs are built from, and the names of a repository's files.

No filesystem and no torch here: :mod:`larr.export.model_configs` builds the configs from these,
:mod:`larr.export.repository` writes the repository.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tritonclient.grpc import model_config_pb2 as mc

from larr.contract import CTR_MODEL, EMBEDDER_MODEL, ENSEMBLE_NAME, FEATURE_CACHE_MODEL
from larr.errors import UserError
from larr.export.embedder_precision import EmbedderPrecision
from larr.layout import SERVABLE_VARIANTS, Variant
from larr.serving.buckets import ShapeBucketing
from larr.serving.fresh_text import DEFAULT_BUSY_SHARE, DEFAULT_MISS_DEADLINE_MS, FreshTextPolicy
from larr.serving.runtime import ONNX_RUNTIME, RUNTIMES, TORCH_RUNTIME
from larr.serving.stores.factory import DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_MAX_BYTES, StoreKind
from larr.serving.stores.redis import RedisStoreConfig

TARGETS = ("cpu", "gpu")
CONFIG_FILE = "config.pbtxt"
ADAPTER_FILE = "model.py"
VERSION = "1"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
TORCH_DIR = "torch"  # runtime "torch": the PyTorch artifacts, named by the model_file parameter
# Every model `larr export` writes, whatever the target (the deployment manifests check for these folders).
REPOSITORY_MODELS = (ENSEMBLE_NAME, FEATURE_CACHE_MODEL, EMBEDDER_MODEL, CTR_MODEL)
PYTHON_MODELS = {"cpu": (FEATURE_CACHE_MODEL, EMBEDDER_MODEL, CTR_MODEL), "gpu": (FEATURE_CACHE_MODEL,)}
# Niceness of the embedder_background stub (fresh_text_policy async): the lowest priority there is (with it the
# stub takes SCHED_IDLE, larr.serving.model_config), so background embedding runs on cores the request path leaves idle.
BACKGROUND_NICE = 19


class RepositoryError(UserError, RuntimeError):
    """The checkpoints, the dataset or the options cannot make a consistent model repository."""


@dataclass(frozen=True)
class RepositoryOptions:
    """How to serve: the ``larr export`` flags."""

    target: str = field(default="cpu", metadata={"help": "'cpu': python-backend models; 'gpu': TensorRT plans"})
    variant: Variant = field(
        default=Variant.LARR,
        metadata={"help": f"which trained CTR model: one of {[v.value for v in SERVABLE_VARIANTS]} (a name is accepted)"},
    )
    scene_store: StoreKind = field(
        default=StoreKind.LOCAL,
        metadata={"help": "where feature_cache keeps scene vectors: 'local' = the scene table embedded at export + "
                          "an in-process LRU; 'redis' = those + Redis shared by replicas (--redis-url); 'lru' = the LRU "
                          "alone (starts cold)"},
    )
    redis_url: str = field(default="", metadata={"help": "scene_store redis: the Redis every replica shares, "
                                                         "redis://host:port/db (one node) or "
                                                         "redis+cluster://host:port,host:port/db (Redis Cluster)"})
    redis_socket_timeout_ms: float = field(
        default=RedisStoreConfig.socket_timeout_ms,
        metadata={"help": "scene_store redis: the longest one Redis read/write may block a request before it counts "
                          "as a miss (raise it where Redis is not on the LAN)"},
    )
    redis_retry_after_s: float = field(
        default=RedisStoreConfig.retry_after_s,
        metadata={"help": "scene_store redis: after a Redis failure, Redis is skipped (misses) for this long, then "
                          "tried again (how soon a replica reconnects by itself)"},
    )
    extra_texts: str = field(
        default="",
        metadata={"help": "JSON lines {\"feature\": name, \"text\": ...} embedded into the scene table beside the "
                          "dataset's texts (e.g. texts taken from logs)"},
    )
    fresh_text_policy: FreshTextPolicy = field(
        default=FreshTextPolicy.STRICT,
        metadata={"help": "a scene text no store holds: 'strict' embeds it before answering; 'async' answers with the "
                          "unseen-text row (zeros) now and embeds it in the background; 'deadline' embeds it as strict "
                          "does but answers with the unseen-text row after --miss-deadline-ms (larr.serving.fresh_text)"},
    )
    miss_deadline_ms: float = field(
        default=DEFAULT_MISS_DEADLINE_MS,
        metadata={"help": "fresh_text_policy deadline: the longest a request waits for its fresh texts' embeddings; "
                          "later ones are still stored, so the texts hit next time (larr.serving.deadline)"},
    )
    background_busy_share: float = field(
        default=DEFAULT_BUSY_SHARE,
        metadata={"help": "fresh_text_policy async: the largest share of wall time the background embedder may spend "
                          "embedding; below 1 it pauses between batches (shorter request tails, slower to learn new "
                          "texts: larr.serving.fresh_text.BackgroundEmbedder)"},
    )
    cache_capacity: int = field(default=DEFAULT_CACHE_CAPACITY, metadata={"help": "feature cache bound, in entries"})
    cache_max_bytes: int = field(
        default=DEFAULT_CACHE_MAX_BYTES,
        metadata={"help": "feature cache bound, in bytes: each entry counts its vector + the Python objects around it "
                          "(larr.serving.stores.lru.entry_bytes); the process holds about twice this (docs/serving.md); 0 = no byte bound"},
    )
    max_candidates: int = field(default=1000, metadata={"help": "most candidate items per request"})
    embedder_max_batch: int = field(default=64, metadata={"help": "embedder max_batch_size (texts per call)"})
    feature_cache_instances: int = field(
        default=1,
        metadata={"help": "feature_cache instances (processes, each with its own in-process store); with request "
                          "batching one instance serves many requests per execute, so one cache per server is the default"},
    )
    embedder_instances: int = field(default=1, metadata={"help": "embedder model instances"})
    ctr_instances: int = field(default=1, metadata={"help": "ctr model instances"})
    runtime: str = field(default=ONNX_RUNTIME, metadata={"help": "cpu target: 'onnxruntime' or 'torch'"})
    embedder_precision: EmbedderPrecision = field(
        default=EmbedderPrecision.FP32,
        metadata={"help": "runtime onnxruntime: the embedder graph's precision: 'fp32'; 'int8' = dynamic int8 "
                          "weight MatMuls (CPU, VNNI/AVX2); 'fp16' = for --device cuda. The scene table is embedded "
                          "by the same graph (larr.export.embedder_precision)"},
    )
    device: str = field(default="cpu", metadata={"help": "cpu target: 'cpu' or 'cuda[:N]' for the python models"})
    shape_buckets: ShapeBucketing = field(
        default=ShapeBucketing.OFF,
        metadata={"help": "runtime torch: 'pow2' pads every embedder and ctr call to a power-of-two batch x length "
                          "bucket; with --device cuda each bucket is a CUDA graph captured at load, in bf16 "
                          "(larr.serving.graphs); 'off': eager fp32 at each call's own shape"},
    )
    intra_op_threads: int = field(default=0, metadata={"help": "ONNX Runtime / torch threads per model, 0 = default"})
    max_queue_delay_us: int = field(default=500, metadata={"help": "dynamic batching delay of every batched step"})
    batch_requests: int = field(
        default=64,
        metadata={"help": "cpu target: requests one execute of feature_cache and ctr may serve (dynamic batching; "
                          "the ensemble's max_batch_size); 0 = one request per execute. The gpu target's TensorRT "
                          "ctr plan scores one request per execute, so it serves unbatched"},
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "scene_store", StoreKind.parse(self.scene_store))  # a str from the CLI -> the enum
        object.__setattr__(self, "fresh_text_policy", FreshTextPolicy.parse(self.fresh_text_policy))
        object.__setattr__(self, "shape_buckets", ShapeBucketing.parse(self.shape_buckets))
        if self.shape_buckets is not ShapeBucketing.OFF and (self.target == "gpu" or self.runtime != TORCH_RUNTIME):
            raise ValueError("shape_buckets applies to --target cpu --runtime torch (the PyTorch models); "
                             "TensorRT plans have their own optimisation profiles")
        if not 0.0 < self.background_busy_share <= 1.0:
            raise ValueError(f"background_busy_share must be in (0, 1], got {self.background_busy_share}")
        if not 0.0 <= self.miss_deadline_ms < float("inf"):
            raise ValueError(f"miss_deadline_ms must be a finite number >= 0, got {self.miss_deadline_ms}")
        if self.scene_store is StoreKind.REDIS and not self.redis_url:
            raise ValueError("scene_store 'redis' needs redis_url (--redis-url redis://host:port/db)")
        if self.scene_store is StoreKind.REDIS:  # the store's own checks, at export rather than at server start
            RedisStoreConfig(url=self.redis_url, socket_timeout_ms=self.redis_socket_timeout_ms,
                             retry_after_s=self.redis_retry_after_s)
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        variant = Variant.parse(self.variant)
        if not variant.servable:
            raise ValueError(
                f"variant {variant.value!r} cannot be served by the {ENSEMBLE_NAME!r} ensemble: "
                f"{not_servable_reason(variant)}; servable: {[v.value for v in SERVABLE_VARIANTS]} (a TextEmbedder "
                "folder, and a CTR model that reads one embedding per scene feature)"
            )
        object.__setattr__(self, "variant", variant)  # frozen: normalised once, here
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.target == "gpu" and self.runtime != ONNX_RUNTIME:
            raise ValueError("runtime applies to the python models of --target cpu; --target gpu serves TensorRT plans")
        object.__setattr__(self, "embedder_precision", EmbedderPrecision.parse(self.embedder_precision))
        if self.embedder_precision is not EmbedderPrecision.FP32 and (self.target == "gpu" or self.runtime != ONNX_RUNTIME):
            raise ValueError(
                f"embedder_precision {self.embedder_precision.value!r} applies to the ONNX Runtime embedder of "
                "--target cpu --runtime onnxruntime; --target gpu builds TensorRT FP16 engines from the fp32 graph, "
                "--runtime torch serves the PyTorch checkpoint"
            )
        cuda_index = self.device.partition(":")[2]
        if not (self.device in ("cpu", "cuda") or (self.device.startswith("cuda:") and cuda_index.isdigit())):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        for name in ("max_candidates", "embedder_max_batch", "feature_cache_instances", "embedder_instances", "ctr_instances"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("cache_capacity", "cache_max_bytes", "intra_op_threads", "max_queue_delay_us", "batch_requests"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def request_batch(self) -> int:
        """max_batch_size of the ensemble and its request steps (0: one request per execute)."""
        return 0 if self.target == "gpu" else self.batch_requests

    @property
    def instance_kind(self) -> int:
        """Where the embedder and ctr instances run: GPU for the gpu target or a cuda device."""
        on_gpu = self.target == "gpu" or self.device.startswith("cuda")
        return mc.ModelInstanceGroup.KIND_GPU if on_gpu else mc.ModelInstanceGroup.KIND_CPU


def not_servable_reason(variant: Variant) -> str:
    """Why the ``larr`` ensemble cannot serve ``variant`` (one that is not ``Variant.servable``)."""
    if variant.whole_scene:
        return "it embeds the whole scene on every request, the work the feature cache exists to avoid"
    return "its features come from the stage-1 LM, so there is no TextEmbedder folder to export"


@dataclass(frozen=True)
class ModelFacts:
    """What the configs need to know about the exported models."""

    scene_features: tuple[str, ...]  # K names, in the order clients send SCENE_TEXT
    embedding_dim: int  # D
    scene_inputs: int  # rows of SCENE_EMB the CTR graph takes (K for every supported variant)
    embedder_version: str
    max_length: int  # tokens per embedder input, <emb> included (TensorRT sequence profile)
    vocab_size: int  # rows of the embedder's token-embedding table: INPUT_IDS are in [0, vocab_size)
    scene_vocab_sizes: tuple[int, ...]  # (K,): rows of the CTR model's field table per scene feature (row 0 = unseen)


@dataclass(frozen=True)
class DatasetFacts:
    num_users: int
    num_items: int
    scene_features: tuple[str, ...] | None  # None when the counts were given and the dataset not read


__all__ = [
    "ADAPTER_FILE",
    "BACKGROUND_NICE",
    "CONFIG_FILE",
    "ONNX_FILE",
    "PLAN_FILE",
    "PYTHON_MODELS",
    "REPOSITORY_MODELS",
    "TARGETS",
    "TORCH_DIR",
    "VERSION",
    "DatasetFacts",
    "ModelFacts",
    "RepositoryError",
    "RepositoryOptions",
    "not_servable_reason",
]
