"""Write the Triton model repository that serves a trained run (``larr export``).

    from larr.export.repository import write_repository

    write_repository(Path("runs/tiny"), RunLayout(Path("runs/tiny")).model_repository_dir, RepositoryOptions(target="cpu"))

Layout (tensor names and parameters from larr.contract; D = embedding size, K = scene features)::

    OUT/larr/config.pbtxt           ensemble: SCENE_TEXT [-1] BYTES, USER_ID [1], ITEM_IDS [-1] -> CTR [-1]
    OUT/larr/1/                     item_names.json (for `larr query`; Triton reads nothing here, but an ensemble
                                    still needs a version folder)
    OUT/feature_cache/config.pbtxt  python: SCENE_TEXT [-1], USER_ID [1], ITEM_IDS [-1] (checked) -> SCENE_EMB [-1, D],
                                    SCENE_IDS [-1]
    OUT/feature_cache/1/            tokenizer.json, embedding_config.json, scene_vocab.json, model.py
    OUT/embedder/config.pbtxt       cpu: python (ONNX Runtime | torch), gpu: tensorrt_plan; dynamic batching
    OUT/embedder/1/                 model.onnx [+ model.onnx.data] [+ torch/] + model.py  |  model.plan
    OUT/ctr/config.pbtxt            cpu: python, gpu: tensorrt_plan; SCENE_EMB [K, D], SCENE_IDS [K], USER_ID [1],
                                    ITEM_IDS [-1] -> CTR [-1]
    OUT/ctr/1/                      model.onnx [+ torch/ with serving.json] + model.py  |  model.plan

Every ``config.pbtxt`` is a ``tritonclient.grpc.model_config_pb2.ModelConfig`` written with
``google.protobuf.text_format``. The python models' ``model.py`` adapters are package data
(``larr.model_repository``, found by ``larr.layout.packaged_adapters_dir``) and copied from there: the
repository is written outside the source tree (by default into the run folder, ``RUN/model_repository``).
``embedder_version`` (the first 12 hex chars of the sha256 of the exported embedder ONNX, external data
included) keys the feature cache, so a new embedder never reads stale entries.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from larr.contract import (
    ATTENTION_MASK,
    CTR,
    CTR_MODEL,
    EMBEDDER_BACKGROUND_MODEL,
    EMBEDDER_MODEL,
    EMBEDDING,
    EMBEDDING_CONFIG_FILE,
    ENSEMBLE_NAME,
    FEATURE_CACHE_MODEL,
    INPUT_IDS,
    ITEM_IDS,
    ITEM_NAMES_PATH,
    PARAM_BACKGROUND_BUSY_SHARE,
    PARAM_BACKGROUND_EMBEDDER_MODEL,
    PARAM_CACHE_CAPACITY,
    PARAM_CACHE_MAX_BYTES,
    PARAM_DEVICE,
    PARAM_EMBEDDER_MAX_BATCH,
    PARAM_EMBEDDER_MODEL,
    PARAM_EMBEDDER_VERSION,
    PARAM_FRESH_TEXT_POLICY,
    PARAM_INTRA_OP_THREADS,
    PARAM_MAX_CANDIDATES,
    PARAM_MODEL_FILE,
    PARAM_PROCESS_NICE,
    PARAM_REDIS_RETRY_AFTER_S,
    PARAM_REDIS_SOCKET_TIMEOUT_MS,
    PARAM_REDIS_URL,
    PARAM_RUNTIME,
    PARAM_SCENE_FEATURES,
    PARAM_SCENE_STORE,
    PARAM_SCENE_VOCAB_SIZES,
    PARAM_VOCAB_SIZE,
    SCENE_EMB,
    SCENE_IDS,
    SCENE_TEXT,
    SCENE_VOCAB_FILE,
    TOKENIZER_FILE,
    USER_ID,
)
from larr.errors import UserError
from larr.export.embedder_precision import EmbedderPrecision
from larr.layout import SERVABLE_VARIANTS, RunLayout, Variant, packaged_adapters_dir
from larr.serving.fresh_text import DEFAULT_BUSY_SHARE, FreshTextPolicy
from larr.serving.runtime import ONNX_RUNTIME, RUNTIMES, SERVING_META_FILE, TORCH_RUNTIME
from larr.serving.stores.factory import DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_MAX_BYTES, StoreKind
from larr.serving.stores.redis import RedisStoreConfig

if TYPE_CHECKING:
    from larr.tokenization import EmbeddingInputConfig

log = logging.getLogger(__name__)

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
TRT_OPT_BATCH = 16  # TensorRT profiles: the shapes to tune for (typical embedder batch, sequence, candidates)
TRT_OPT_SEQUENCE = 16
TRT_OPT_CANDIDATES = 100


class RepositoryError(UserError, RuntimeError):
    """The checkpoints, the dataset or the options cannot make a consistent model repository."""


# --------------------------------------------------------------------------------------------- options and facts


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
    redis_url: str = field(default="", metadata={"help": "scene_store redis: the Redis every replica shares, redis://host:port/db"})
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
                          "unseen-text row (zeros) now and embeds it in the background (larr.serving.fresh_text)"},
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
                          "(larr.serving.lru.entry_bytes); the process holds about twice this (README); 0 = no byte bound"},
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
        if not 0.0 < self.background_busy_share <= 1.0:
            raise ValueError(f"background_busy_share must be in (0, 1], got {self.background_busy_share}")
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
class CheckpointPaths:
    """The trained artifacts a variant is served from."""

    embedder_dir: Path  # TextEmbedder dir
    ctr_dir: Path  # LarrCTR dir

    @classmethod
    def find(cls, checkpoints: Path, variant: Variant) -> "CheckpointPaths":
        from larr.models.ctr_model import SPEC_FILE
        from larr.models.embedder import EMBEDDER_FILE

        layout = RunLayout(checkpoints)
        if not layout.root.is_dir():
            raise RepositoryError(f"{checkpoints}: no such run folder; make one with `larr train all --out {checkpoints}`")
        embedder_dir = layout.embedder_dir(variant, layout.ctr_embedder_source())  # the one stage 3 trained on
        ctr_dir = layout.ctr_dir(variant)
        if not (embedder_dir / EMBEDDER_FILE).exists():
            raise RepositoryError(f"{embedder_dir}: no trained embedder; run `larr train embed --out {checkpoints}`")
        if not (ctr_dir / SPEC_FILE).exists():
            raise RepositoryError(
                f"{ctr_dir}: no trained CTR model for variant {variant!r}; "
                f"run `larr train ctr --out {checkpoints}` with {variant} in ctr.variants"
            )
        return cls(embedder_dir, ctr_dir)


@dataclass(frozen=True)
class RepositoryResult:
    out: Path
    options: RepositoryOptions
    facts: ModelFacts
    configs: dict[str, mc.ModelConfig]


# --------------------------------------------------------------------------------------------- configs


def build_configs(options: RepositoryOptions, facts: ModelFacts) -> dict[str, mc.ModelConfig]:
    """Model name -> its ModelConfig, for the target in ``options``."""
    configs = {
        ENSEMBLE_NAME: ensemble_config(options, facts),
        FEATURE_CACHE_MODEL: feature_cache_config(options, facts),
        EMBEDDER_MODEL: embedder_config(options, facts),
        CTR_MODEL: ctr_config(options, facts),
    }
    validate_ensemble(configs[ENSEMBLE_NAME], configs)
    return configs


def ensemble_config(
    options: RepositoryOptions, facts: ModelFacts, *, name: str = ENSEMBLE_NAME,
    scene_model: str = FEATURE_CACHE_MODEL, ctr_model: str = CTR_MODEL,
    scene_inputs: tuple[str, ...] = (SCENE_TEXT, USER_ID, ITEM_IDS),
) -> mc.ModelConfig:
    """The public contract (inputs, outputs, published parameters) over two steps: ``scene_model`` turns
    SCENE_TEXT into SCENE_EMB/SCENE_IDS, ``ctr_model`` scores. Other step names serve another scene
    embedding behind the same contract (the benchmarks' baseline); ``scene_inputs`` are the ensemble inputs
    ``scene_model`` reads (feature_cache: all three, so that it checks the ids, see below)."""
    # dims exclude the batch axis when request_batch > 0: a client sends SCENE_TEXT [1, K], ITEM_IDS [1, N]
    config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=options.request_batch)
    config.input.add(name=SCENE_TEXT, data_type=mc.TYPE_STRING, dims=[-1])
    config.input.add(name=USER_ID, data_type=mc.TYPE_INT64, dims=[1])
    config.input.add(name=ITEM_IDS, data_type=mc.TYPE_INT64, dims=[-1])
    config.output.add(name=CTR, data_type=mc.TYPE_FP32, dims=[-1])
    # Every request is checked in the first step, on both targets: feature_cache reads USER_ID and ITEM_IDS
    # too and refuses negative ids and empty or over-long candidate lists with the ctr model's own check
    # (larr.serving.ctr_request), before any embedding is computed. The gpu target's ctr step is a TensorRT
    # plan with no checks of its own (it would score a negative id as cold start and answer a long list with
    # its profile error); checking in the step both targets share keeps one copy of each check and one
    # wiring for both, where a check step before the plan would add a python hop on the gpu target only.
    scene_step = config.ensemble_scheduling.step.add(model_name=scene_model, model_version=-1)
    for tensor in scene_inputs:
        scene_step.input_map[tensor] = tensor  # step model's tensor -> ensemble tensor
    scene_step.output_map[SCENE_EMB] = SCENE_EMB
    scene_step.output_map[SCENE_IDS] = SCENE_IDS
    ctr_step = config.ensemble_scheduling.step.add(model_name=ctr_model, model_version=-1)
    for tensor in (SCENE_EMB, SCENE_IDS, USER_ID, ITEM_IDS):
        ctr_step.input_map[tensor] = tensor
    ctr_step.output_map[CTR] = CTR
    _set_parameters(config, {
        PARAM_SCENE_FEATURES: json.dumps(list(facts.scene_features)),
        PARAM_MAX_CANDIDATES: options.max_candidates,
        PARAM_EMBEDDER_VERSION: facts.embedder_version,
    })
    return config


def feature_cache_config(options: RepositoryOptions, facts: ModelFacts) -> mc.ModelConfig:
    # Dynamic batching hands one execute() many requests (each [1, K] texts); the model merges the misses
    # of all of them into one embedder call itself.
    config = mc.ModelConfig(name=FEATURE_CACHE_MODEL, backend="python", max_batch_size=options.request_batch)
    config.input.add(name=SCENE_TEXT, data_type=mc.TYPE_STRING, dims=[-1])
    # read only to check them (ensemble_config); ragged, or requests with different N would not batch together
    config.input.add(name=USER_ID, data_type=mc.TYPE_INT64, dims=[1])
    config.input.add(name=ITEM_IDS, data_type=mc.TYPE_INT64, dims=[-1], allow_ragged_batch=options.request_batch > 0)
    config.output.add(name=SCENE_EMB, data_type=mc.TYPE_FP32, dims=[-1, facts.embedding_dim])
    config.output.add(name=SCENE_IDS, data_type=mc.TYPE_INT64, dims=[-1])
    _set_parameters(config, {
        PARAM_SCENE_FEATURES: json.dumps(list(facts.scene_features)),
        PARAM_SCENE_STORE: options.scene_store.value,
        PARAM_CACHE_CAPACITY: options.cache_capacity,
        PARAM_CACHE_MAX_BYTES: options.cache_max_bytes,
        **({
            PARAM_REDIS_URL: options.redis_url,
            PARAM_REDIS_SOCKET_TIMEOUT_MS: options.redis_socket_timeout_ms,
            PARAM_REDIS_RETRY_AFTER_S: options.redis_retry_after_s,
        } if options.scene_store is StoreKind.REDIS else {}),
        PARAM_EMBEDDER_MODEL: EMBEDDER_MODEL,
        PARAM_EMBEDDER_MAX_BATCH: options.embedder_max_batch,
        PARAM_EMBEDDER_VERSION: facts.embedder_version,
        PARAM_FRESH_TEXT_POLICY: options.fresh_text_policy.value,
        PARAM_BACKGROUND_EMBEDDER_MODEL: background_embedder_model(options),
        PARAM_BACKGROUND_BUSY_SHARE: options.background_busy_share,
        PARAM_MAX_CANDIDATES: options.max_candidates,
    })
    if options.request_batch:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=options.feature_cache_instances)
    return config


def background_embedder_model(options: RepositoryOptions) -> str:
    """Where the feature_cache's background BLS calls go: ``embedder_background`` for async on the cpu target
    (a python-backend embedder, whose stub :func:`apply_fresh_text_policy` renices), else the embedder."""
    async_on_cpu = options.fresh_text_policy is FreshTextPolicy.ASYNC and options.target == "cpu"
    return EMBEDDER_BACKGROUND_MODEL if async_on_cpu else EMBEDDER_MODEL


def embedder_config(options: RepositoryOptions, facts: ModelFacts) -> mc.ModelConfig:
    """Batched over texts: dims exclude the batch axis, so ids are ``[-1]`` (T) and the output ``[D]``."""
    config = mc.ModelConfig(name=EMBEDDER_MODEL, max_batch_size=options.embedder_max_batch)
    # Ragged on the python backend: Triton batches only requests of equal shapes unless told otherwise, and each
    # call's texts are padded to its own longest (T varies); the adapter re-pads the batch to the longest T
    # (larr.serving.embedder_batch). A TensorRT plan would need the inputs concatenated flat, so not there.
    ragged = options.target != "gpu"
    config.input.add(name=INPUT_IDS, data_type=mc.TYPE_INT64, dims=[-1], allow_ragged_batch=ragged)
    config.input.add(name=ATTENTION_MASK, data_type=mc.TYPE_INT64, dims=[-1], allow_ragged_batch=ragged)
    config.output.add(name=EMBEDDING, data_type=mc.TYPE_FP32, dims=[facts.embedding_dim])
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    _set_backend(config, options, {**_runtime_parameters(options), PARAM_VOCAB_SIZE: facts.vocab_size})
    config.instance_group.add(kind=options.instance_kind, count=options.embedder_instances)
    return config


def ctr_config(options: RepositoryOptions, facts: ModelFacts, *, name: str = CTR_MODEL) -> mc.ModelConfig:
    """K and D are fixed by the trained model. Batched (cpu target): one execute scores a dynamic batch of
    requests with different candidate counts (``allow_ragged_batch`` on ITEM_IDS) in one graph run."""
    config = mc.ModelConfig(name=name, max_batch_size=options.request_batch)
    config.input.add(name=SCENE_EMB, data_type=mc.TYPE_FP32, dims=[facts.scene_inputs, facts.embedding_dim])
    config.input.add(name=SCENE_IDS, data_type=mc.TYPE_INT64, dims=[len(facts.scene_features)])
    config.input.add(name=USER_ID, data_type=mc.TYPE_INT64, dims=[1])
    config.input.add(name=ITEM_IDS, data_type=mc.TYPE_INT64, dims=[-1], allow_ragged_batch=options.request_batch > 0)
    config.output.add(name=CTR, data_type=mc.TYPE_FP32, dims=[-1])
    if options.request_batch:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    _set_backend(config, options, {
        **_runtime_parameters(options),
        PARAM_MAX_CANDIDATES: options.max_candidates,
        PARAM_SCENE_VOCAB_SIZES: json.dumps(list(facts.scene_vocab_sizes)),
    })
    config.instance_group.add(kind=options.instance_kind, count=options.ctr_instances)
    return config


def _runtime_parameters(options: RepositoryOptions) -> dict[str, object]:
    return {
        PARAM_RUNTIME: options.runtime,
        PARAM_DEVICE: options.device,
        PARAM_MODEL_FILE: TORCH_DIR if options.runtime == TORCH_RUNTIME else ONNX_FILE,
        PARAM_INTRA_OP_THREADS: options.intra_op_threads,
    }


def _set_backend(config: mc.ModelConfig, options: RepositoryOptions, python_parameters: dict[str, object]) -> None:
    """cpu target: python backend + its runtime parameters; gpu target: a TensorRT plan."""
    if options.target == "gpu":
        config.platform = "tensorrt_plan"
        config.default_model_filename = PLAN_FILE
    else:
        config.backend = "python"
        _set_parameters(config, python_parameters)


def _set_parameters(config: mc.ModelConfig, values: dict[str, object]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)


def validate_ensemble(ensemble: mc.ModelConfig, models: dict[str, mc.ModelConfig]) -> None:
    """Raise :class:`RepositoryError` unless the steps form a graph Triton can schedule.

    Every step model exists; its mapped tensors are inputs/outputs of that model with the ensemble
    tensor's dtype and a compatible shape (-1 matches any size); every step input is an ensemble input
    or an earlier step's output; every model input is fed; every ensemble output is produced by a step.
    """
    available = {t.name: t for t in ensemble.input}
    for index, step in enumerate(ensemble.ensemble_scheduling.step):
        where = f"ensemble {ensemble.name!r} step {index} ({step.model_name})"
        model = models.get(step.model_name)
        if model is None:
            raise RepositoryError(f"{where}: no model named {step.model_name!r}")
        # tensors carry a batch axis exactly when the ensemble batches; a step must take as many requests
        if (model.max_batch_size > 0) != (ensemble.max_batch_size > 0) or model.max_batch_size < ensemble.max_batch_size:
            raise RepositoryError(
                f"{where}: max_batch_size {model.max_batch_size} does not fit the ensemble's {ensemble.max_batch_size}"
            )
        model_inputs = {t.name: t for t in model.input}
        model_outputs = {t.name: t for t in model.output}
        for model_tensor, ensemble_tensor in step.input_map.items():
            if model_tensor not in model_inputs:
                raise RepositoryError(f"{where}: {model_tensor!r} is not a model input {sorted(model_inputs)}")
            if ensemble_tensor not in available:
                raise RepositoryError(f"{where}: {ensemble_tensor!r} is no ensemble input nor an earlier output")
            _require_compatible(where, available[ensemble_tensor], model_inputs[model_tensor])
        unfed = sorted(set(model_inputs) - set(step.input_map))
        if unfed:
            raise RepositoryError(f"{where}: model inputs {unfed} are not fed")
        for model_tensor, ensemble_tensor in step.output_map.items():
            if model_tensor not in model_outputs:
                raise RepositoryError(f"{where}: {model_tensor!r} is not a model output {sorted(model_outputs)}")
            available[ensemble_tensor] = model_outputs[model_tensor]
    for output in ensemble.output:
        if output.name not in available:
            raise RepositoryError(f"ensemble {ensemble.name!r}: no step produces the output {output.name!r}")
        _require_compatible(f"ensemble {ensemble.name!r} output", available[output.name], output)


def _require_compatible(where: str, produced, consumed) -> None:
    """Same dtype, same rank, equal sizes where neither side is -1 (Triton's ensemble check)."""
    dims_match = len(produced.dims) == len(consumed.dims) and all(
        a == b or -1 in (a, b) for a, b in zip(produced.dims, consumed.dims)
    )
    if produced.data_type != consumed.data_type or not dims_match:
        raise RepositoryError(
            f"{where}: tensor {produced.name!r} is {mc.DataType.Name(produced.data_type)} {list(produced.dims)} "
            f"where {consumed.name!r} needs {mc.DataType.Name(consumed.data_type)} {list(consumed.dims)}"
        )


def config_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


# --------------------------------------------------------------------------------------------- dataset facts


@dataclass(frozen=True)
class DatasetFacts:
    num_users: int
    num_items: int
    scene_features: tuple[str, ...] | None  # None when the counts were given and the dataset not read


def dataset_facts(checkpoints: Path, num_users: int | None = None, num_items: int | None = None) -> DatasetFacts:
    """Id ranges of the dataset the run was trained on: given, or read via ``checkpoints/config.yaml``'s ``data``
    (found as :meth:`larr.layout.RunLayout.dataset_dir` finds it)."""
    if num_users is not None and num_items is not None:
        return DatasetFacts(num_users, num_items, None)
    from larr.data.schema import load_dataset_info

    layout = RunLayout(checkpoints)
    config_path = layout.config_file
    if not config_path.exists():
        raise RepositoryError(f"{config_path}: missing (is {checkpoints} a `larr train` run folder?)")
    data = layout.dataset_name()
    if not data:
        raise RepositoryError(f"{config_path}: names no dataset (`data:`)")
    found = layout.dataset_dir()
    if found is None:
        candidates = layout.dataset_candidates()
        raise RepositoryError(
            f"{config_path} names the dataset {data!r}, which is not there any more (looked in "
            f"{', '.join(str(c) for c in candidates[:3])}, ...); pass --num-users and --num-items "
            "(the dataset's id ranges) instead"
        )
    info = load_dataset_info(found)
    return DatasetFacts(
        num_users if num_users is not None else info.num_users,
        num_items if num_items is not None else info.num_items,
        tuple(info.scene_features),
    )


# --------------------------------------------------------------------------------------------- writing


def write_repository(
    checkpoints: Path,
    out: Path,
    options: RepositoryOptions,
    *,
    num_users: int | None = None,
    num_items: int | None = None,
    adapters_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> RepositoryResult:
    """Export the run in ``checkpoints`` and write the model repository ``out`` (layout: module docstring),
    served as ``options`` say.

    ``num_users``/``num_items`` default to the dataset's (see :func:`dataset_facts`). ``adapters_dir``
    is where the ``<model>/1/model.py`` adapters are copied from (default: the ones installed with larr,
    :func:`larr.layout.packaged_adapters_dir`). ``progress`` receives one line per artifact written.
    """
    from larr.export.embedder_precision import export_embedder_at
    from larr.export.onnx_export import (
        embedder_vocab_size,
        embedding_dim,
        export_ctr,
        onnx_digest,
        scene_vocab_sizes,
    )
    from larr.models.ctr_model import VOCAB_FILE

    report = progress or log.info
    checkpoints, out = Path(checkpoints), Path(out)
    if options.target == "gpu":
        from larr.export.tensorrt_build import require_tensorrt

        require_tensorrt()  # before minutes of export, not after
    adapters_dir = checked_adapters_dir(adapters_dir, out)
    paths = CheckpointPaths.find(checkpoints, options.variant)
    dataset = dataset_facts(checkpoints, num_users, num_items)
    vocab = json.loads((paths.ctr_dir / VOCAB_FILE).read_text(encoding="utf-8"))
    scene_features = tuple(vocab["fields"][2:])  # fields are [user, item, *scene features]
    if dataset.scene_features is not None and dataset.scene_features != scene_features:
        raise RepositoryError(
            f"{paths.ctr_dir} was trained on scene features {scene_features}, the dataset has {dataset.scene_features}"
        )
    dim = embedding_dim(paths.embedder_dir)
    models = REPOSITORY_MODELS
    version_dirs = {name: fresh_version_dir(out / name) for name in models}

    with tempfile.TemporaryDirectory(prefix="larr-export-") as scratch:
        # gpu: the ONNX graphs are only the engines' source and stay out of the repository
        onnx_home = {name: Path(scratch) / name if options.target == "gpu" else version_dirs[name] for name in models}
        embedder_onnx = export_embedder_at(paths.embedder_dir, onnx_home[EMBEDDER_MODEL] / ONNX_FILE,
                                           options.embedder_precision)
        report(f"embedder: {embedder_onnx} ({options.embedder_precision}, from {paths.embedder_dir})")
        ctr_onnx = onnx_home[CTR_MODEL] / ONNX_FILE
        export_ctr(paths.ctr_dir, dataset.num_users, dataset.num_items, ctr_onnx, scene_dim=dim,
                   batched=options.request_batch > 0)
        report(f"ctr: {ctr_onnx} (from {paths.ctr_dir}; {dataset.num_users} users, {dataset.num_items} items)")
        facts = ModelFacts(
            scene_features=scene_features,
            embedding_dim=dim,
            scene_inputs=_scene_inputs(ctr_onnx),
            embedder_version=onnx_digest(embedder_onnx),
            max_length=_max_length(paths.embedder_dir),
            vocab_size=embedder_vocab_size(paths.embedder_dir),
            scene_vocab_sizes=scene_vocab_sizes(paths.ctr_dir),
        )
        if options.target == "gpu":
            _build_plans(options, facts, embedder_onnx, ctr_onnx, version_dirs, report)

    if options.runtime == TORCH_RUNTIME:
        _copy_torch_artifacts(paths, dataset, version_dirs, report)
    _write_feature_cache_files(paths.embedder_dir, vocab, version_dirs[FEATURE_CACHE_MODEL], options, report)
    _write_item_names(checkpoints, out / ITEM_NAMES_PATH, report)
    if options.scene_store is not StoreKind.LRU:
        _write_scene_table(checkpoints, paths, options, facts, version_dirs[FEATURE_CACHE_MODEL],
                           version_dirs[EMBEDDER_MODEL] / ONNX_FILE, report)
    configs = build_configs(options, facts)
    for name, config in configs.items():
        (out / name / CONFIG_FILE).write_text(config_text(config), encoding="utf-8")
        report(f"{name}: {out / name / CONFIG_FILE}")
    _copy_adapters(adapters_dir, out, PYTHON_MODELS[options.target], report)
    apply_fresh_text_policy(out, options.fresh_text_policy, report)
    report(
        f"model repository {out} ready: target {options.target}, variant {options.variant}, "
        f"embedder_version {facts.embedder_version}"
    )
    return RepositoryResult(out, options, facts, configs)


def _write_scene_table(
    checkpoints: Path, paths: CheckpointPaths, options: RepositoryOptions, facts: ModelFacts, version_dir: Path,
    embedder_onnx: Path, report,
) -> None:
    """Every scene text of the run's dataset (+ ``options.extra_texts``), embedded now, beside the tokenizer:
    the served store starts warm (``larr embed-scenes`` rebuilds it alone). An int8/fp16 embedder's table is
    embedded by the served graph itself, so a table hit returns what a miss would."""
    from larr.export.scene_table import SceneTableOptions, write_scene_table

    dataset_dir = RunLayout(checkpoints).dataset_dir()
    if dataset_dir is None:
        report(f"feature_cache: no scene table (the run's dataset is not there); the {options.scene_store.value} "
               "store starts cold")
        return
    served_graph = None if options.embedder_precision is EmbedderPrecision.FP32 else embedder_onnx
    # On the serving GPU when this machine has it: seconds (bf16 autocast, as `larr embed-scenes --device cuda`)
    # where the CPU takes minutes at the 0.5B shape. A build machine without that GPU embeds on its CPU (fp32).
    table_options = SceneTableOptions(device=options.device if _cuda_here(options.device) else "cpu")
    table = write_scene_table(paths.embedder_dir, dataset_dir, version_dir, facts.embedder_version,
                              extra_texts=options.extra_texts or None, options=table_options, progress=report,
                              embedder_onnx=served_graph)
    report(f"feature_cache: scene table {version_dir} ({table.rows} texts)")


def _cuda_here(device: str) -> bool:
    if not device.startswith("cuda"):
        return False
    import torch

    return torch.cuda.is_available()


def _write_item_names(checkpoints: Path, path: Path, report) -> None:
    """The dataset's item names, for clients that print rankings (``larr query --model-repository``)."""
    from larr.data.schema import ITEMS_FILE, load_dataset_info, load_items

    dataset_dir = RunLayout(checkpoints).dataset_dir()
    if dataset_dir is None:
        report(f"{ENSEMBLE_NAME}: no item names (the run's dataset is not there); `larr query` shows ids only")
        return
    items = load_items(dataset_dir / ITEMS_FILE, load_dataset_info(dataset_dir).num_items)
    path.write_text(json.dumps(items.name, ensure_ascii=False) + "\n", encoding="utf-8")
    report(f"{ENSEMBLE_NAME}: {path} ({len(items)} item names)")


def checked_adapters_dir(adapters_dir: Path | None, out: Path) -> Path:
    """The folder the ``<model>/1/model.py`` adapters are copied from (default: the installed ones), checked to
    exist and to lie outside ``out``: an export empties its version folders, the adapters' own included."""
    adapters_dir = Path(adapters_dir) if adapters_dir is not None else packaged_adapters_dir()
    if not adapters_dir.is_dir():
        raise RepositoryError(f"{adapters_dir}: the folder with the model.py adapters (--adapters) is missing")
    resolved, out = adapters_dir.resolve(), Path(out).resolve()
    if resolved == out or resolved in out.parents or out in resolved.parents:
        raise RepositoryError(
            f"{out}: this is where the adapters are copied from ({adapters_dir}); write the repository elsewhere, "
            "e.g. into the run folder (the default of `larr export`)"
        )
    return adapters_dir


def fresh_version_dir(model_dir: Path) -> Path:
    """Empty ``model_dir/1`` so no artifact of an earlier export (a plan, external data) lingers."""
    version_dir = model_dir / VERSION
    if version_dir.exists():
        for entry in version_dir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    version_dir.mkdir(parents=True, exist_ok=True)
    return version_dir


def _scene_inputs(ctr_onnx: Path) -> int:
    from larr.export.onnx_export import describe_inputs

    return int(describe_inputs(ctr_onnx)[SCENE_EMB][-2])  # (K', D) or, batched, (requests, K', D)


def _max_length(embedder_dir: Path) -> int:
    from larr.tokenization import EmbeddingInputConfig

    return EmbeddingInputConfig.load(embedder_dir).max_length


def _build_plans(
    options: RepositoryOptions, facts: ModelFacts, embedder_onnx: Path, ctr_onnx: Path,
    version_dirs: dict[str, Path], report: Callable[[str], None],
) -> None:
    from larr.export.tensorrt_build import build_engine

    batch, length = options.embedder_max_batch, facts.max_length
    text_shapes = ((1, 1), (min(TRT_OPT_BATCH, batch), min(TRT_OPT_SEQUENCE, length)), (batch, length))  # (B, T)
    text_profiles = {INPUT_IDS: text_shapes, ATTENTION_MASK: text_shapes}
    plan = build_engine(embedder_onnx, version_dirs[EMBEDDER_MODEL] / PLAN_FILE, text_profiles)
    report(f"embedder: {plan} (TensorRT FP16, batch <= {batch}, sequence <= {length})")
    candidates = ((1,), (min(TRT_OPT_CANDIDATES, options.max_candidates),), (options.max_candidates,))
    plan = build_engine(ctr_onnx, version_dirs[CTR_MODEL] / PLAN_FILE, {ITEM_IDS: candidates})
    report(f"ctr: {plan} (TensorRT FP16, candidates <= {options.max_candidates})")


def _copy_torch_artifacts(paths: CheckpointPaths, dataset: DatasetFacts, version_dirs: dict[str, Path], report) -> None:
    copy_embedder_torch(paths.embedder_dir, version_dirs[EMBEDDER_MODEL], report)
    copy_ctr_torch(paths.ctr_dir, dataset, version_dirs[CTR_MODEL], report)


def copy_embedder_torch(embedder_dir: Path, version_dir: Path, report: Callable[[str], None]) -> None:
    """Runtime "torch": the TextEmbedder folder itself, as ``version_dir/torch``."""
    embedder_torch = version_dir / TORCH_DIR
    shutil.copytree(embedder_dir, embedder_torch)
    report(f"{version_dir.parent.name}: {embedder_torch} (PyTorch)")


def copy_ctr_torch(ctr_dir: Path, dataset: DatasetFacts, version_dir: Path, report: Callable[[str], None]) -> None:
    """Runtime "torch": a CTR model's spec, weights and vocabulary plus the id ranges it serves, as ``version_dir/torch``."""
    from larr.models.ctr_model import SPEC_FILE, VOCAB_FILE, WEIGHTS_FILE

    ctr_torch = version_dir / TORCH_DIR
    ctr_torch.mkdir()
    for name in (SPEC_FILE, WEIGHTS_FILE, VOCAB_FILE):  # not checkpoint.pt: optimizer state, not needed to serve
        shutil.copy2(ctr_dir / name, ctr_torch / name)
    meta = {"num_users": dataset.num_users, "num_items": dataset.num_items}
    (ctr_torch / SERVING_META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    report(f"{version_dir.parent.name}: {ctr_torch} (PyTorch)")


def served_input_config(embedder_dir: Path, options: RepositoryOptions, **changes) -> "EmbeddingInputConfig":
    """The embedder's input config as the served tokenizers use it (``changes``: e.g. another max_length).

    On the cpu target the embedder batches ragged requests (:func:`embedder_config`), so a text is padded only to
    the longest of its call: on the SmolLM-135M shape at 10 % fresh texts, padding to multiples of 8 (and
    batching equal shapes only) cost LARR 20-24 % of its requests/s (benchmarks/results/cpu-2core-amd-epyc-store-ragged/).
    A TensorRT embedder batches equal shapes only, so there the trained multiple stays."""
    from larr.tokenization import EmbeddingInputConfig

    config = EmbeddingInputConfig.load(embedder_dir)
    if options.target != "gpu":
        changes = {"pad_to_multiple_of": 1, **changes}
    return dataclasses.replace(config, **changes)


def _write_feature_cache_files(
    embedder_dir: Path, vocab: dict, version_dir: Path, options: RepositoryOptions, report
) -> None:
    shutil.copy2(embedder_dir / TOKENIZER_FILE, version_dir / TOKENIZER_FILE)
    served_input_config(embedder_dir, options).save(version_dir)
    scene_vocab = {"fields": vocab["fields"][2:], "values": vocab["values"][2:]}
    (version_dir / SCENE_VOCAB_FILE).write_text(json.dumps(scene_vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    report(f"feature_cache: {version_dir} ({TOKENIZER_FILE}, {EMBEDDING_CONFIG_FILE}, {SCENE_VOCAB_FILE})")


def apply_fresh_text_policy(
    repository: Path, policy: FreshTextPolicy | str, report=None, busy_share: float | None = None
) -> None:
    """Make an exported repository answer fresh texts by ``policy``: a serving-time choice, so a repository can
    be switched without exporting it again (the benchmarks do).

    ``async`` on a python-backend embedder adds ``embedder_background``: the embedder's version folder
    hard-linked, one instance, ``process_nice`` :data:`BACKGROUND_NICE`; the feature_cache sends its background
    BLS calls there, so embedding fresh texts takes a core only when the request path leaves one idle (on two
    cores, a background batch at normal priority halved the CPU of every request behind it). ``strict``
    removes it. A TensorRT embedder (gpu target) has no stub process to renice: the embedder itself is used.
    ``busy_share``, when given, replaces the feature_cache's ``background_busy_share``.
    """
    policy = FreshTextPolicy.parse(policy)
    if busy_share is not None and not 0.0 < busy_share <= 1.0:
        raise ValueError(f"background busy share must be in (0, 1], got {busy_share}")
    repository = Path(repository)
    background_dir = repository / EMBEDDER_BACKGROUND_MODEL
    if background_dir.exists():
        shutil.rmtree(background_dir)
    embedder = _read_config(repository / EMBEDDER_MODEL / CONFIG_FILE)
    background = policy is FreshTextPolicy.ASYNC and embedder.backend == "python"
    if background:
        shutil.copytree(repository / EMBEDDER_MODEL, background_dir, copy_function=link_or_copy)
        config = mc.ModelConfig()
        config.CopyFrom(embedder)
        config.name = EMBEDDER_BACKGROUND_MODEL
        del config.instance_group[:]
        config.instance_group.add(kind=embedder.instance_group[0].kind, count=1)
        config.parameters[PARAM_PROCESS_NICE].string_value = str(BACKGROUND_NICE)
        _rewrite_config(background_dir / CONFIG_FILE, config)
    feature_cache = _read_config(repository / FEATURE_CACHE_MODEL / CONFIG_FILE)
    feature_cache.parameters[PARAM_FRESH_TEXT_POLICY].string_value = policy.value
    if busy_share is not None:
        feature_cache.parameters[PARAM_BACKGROUND_BUSY_SHARE].string_value = str(busy_share)
    feature_cache.parameters[PARAM_BACKGROUND_EMBEDDER_MODEL].string_value = (
        EMBEDDER_BACKGROUND_MODEL if background else EMBEDDER_MODEL
    )
    _rewrite_config(repository / FEATURE_CACHE_MODEL / CONFIG_FILE, feature_cache)
    if report is not None and background:
        report(f"{EMBEDDER_BACKGROUND_MODEL}: {background_dir} (the embedder's files, niceness {BACKGROUND_NICE})")


def _read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


def _rewrite_config(path: Path, config: mc.ModelConfig) -> None:
    text = config_text(config)
    path.unlink(missing_ok=True)  # it may be a hard link to another repository's file
    path.write_text(text, encoding="utf-8")


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Hard-link a file (an exported 0.5B embedder is 2 GB), copying where the file system cannot (another
    device, no permission, too many links); any other error is raised."""
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(source, target)


def _copy_adapters(adapters_dir: Path, out: Path, models: tuple[str, ...], report) -> None:
    for name in models:
        source = adapters_dir / name / VERSION / ADAPTER_FILE
        if not source.exists():
            warnings.warn(f"{source}: adapter missing; model {name!r} will not load until it is there", stacklevel=3)
        else:
            shutil.copy2(source, out / name / VERSION / ADAPTER_FILE)
            report(f"{name}: {out / name / VERSION / ADAPTER_FILE}")


__all__ = [
    "CheckpointPaths",
    "DatasetFacts",
    "ModelFacts",
    "RepositoryError",
    "RepositoryOptions",
    "RepositoryResult",
    "apply_fresh_text_policy",
    "build_configs",
    "checked_adapters_dir",
    "config_text",
    "copy_ctr_torch",
    "copy_embedder_torch",
    "ctr_config",
    "dataset_facts",
    "embedder_config",
    "ensemble_config",
    "fresh_version_dir",
    "link_or_copy",
    "validate_ensemble",
    "write_repository",
]
