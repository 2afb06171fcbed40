"""The Triton ``ModelConfig`` of every model ``larr export`` writes, built from options and facts: proto in, proto out.

    configs = build_configs(RepositoryOptions(target="cpu"), facts)   # model name -> mc.ModelConfig, checked
    (out / name / CONFIG_FILE).write_text(config_text(configs[name]))

Layout of the configs (tensor names and parameters from larr.contract; D = embedding size, K = scene features)::

    larr           ensemble: SCENE_TEXT [-1] BYTES, USER_ID [1], ITEM_IDS [-1] -> CTR [-1]
    feature_cache  python: SCENE_TEXT [-1], USER_ID [1], ITEM_IDS [-1] (checked) -> SCENE_EMB [-1, D], SCENE_IDS [-1]
    embedder       cpu: python (ONNX Runtime | torch), gpu: tensorrt_plan; dynamic batching
    ctr            cpu: python, gpu: tensorrt_plan; SCENE_EMB [K, D], SCENE_IDS [K], USER_ID [1], ITEM_IDS [-1] -> CTR [-1]

No filesystem here: :mod:`larr.export.repository` writes the files, :mod:`larr.export.fresh_text_policy` rewrites
an exported repository's configs with the builders at the end of this module.
"""

from __future__ import annotations

import json

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from larr.contract import (
    ATTENTION_MASK,
    CTR,
    CTR_MODEL,
    EMBEDDER_BACKGROUND_MODEL,
    EMBEDDER_MODEL,
    EMBEDDING,
    ENSEMBLE_NAME,
    FEATURE_CACHE_MODEL,
    INPUT_IDS,
    ITEM_IDS,
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
    PARAM_MISS_DEADLINE_MS,
    PARAM_MODEL_FILE,
    PARAM_PROCESS_NICE,
    PARAM_REDIS_RETRY_AFTER_S,
    PARAM_REDIS_SOCKET_TIMEOUT_MS,
    PARAM_REDIS_URL,
    PARAM_RUNTIME,
    PARAM_SCENE_FEATURES,
    PARAM_SCENE_STORE,
    PARAM_SCENE_VOCAB_SIZES,
    PARAM_SHAPE_BUCKETS,
    PARAM_VOCAB_SIZE,
    SCENE_EMB,
    SCENE_IDS,
    SCENE_TEXT,
    USER_ID,
)
from larr.export.options import (
    BACKGROUND_NICE,
    ONNX_FILE,
    PLAN_FILE,
    TORCH_DIR,
    ModelFacts,
    RepositoryError,
    RepositoryOptions,
)
from larr.serving.buckets import LARGEST_CTR_BUCKET, ShapeBucketing, pow2_grid
from larr.serving.fresh_text import FreshTextPolicy
from larr.serving.runtime import TORCH_RUNTIME
from larr.serving.stores.factory import StoreKind


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
    set_parameters(config, {
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
    set_parameters(config, {
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
        PARAM_MISS_DEADLINE_MS: options.miss_deadline_ms,
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
    _set_backend(config, options, {**_runtime_parameters(options), PARAM_VOCAB_SIZE: facts.vocab_size,
                                   **_shape_buckets(options, options.embedder_max_batch, facts.max_length)})
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
        # batch: requests per run; length: their candidates in all (one request: its own)
        **_shape_buckets(options, max(options.request_batch, 1),
                         min(max(options.request_batch, 1) * options.max_candidates, LARGEST_CTR_BUCKET)),
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


def _shape_buckets(options: RepositoryOptions, max_batch: int, max_length: int) -> dict[str, object]:
    """--shape-buckets pow2: the grid the torch runtime pads a model's calls to (larr.serving.buckets)."""
    if options.shape_buckets is ShapeBucketing.OFF:
        return {}
    return {PARAM_SHAPE_BUCKETS: pow2_grid(max_batch, max_length).to_json()}


def _set_backend(config: mc.ModelConfig, options: RepositoryOptions, python_parameters: dict[str, object]) -> None:
    """cpu target: python backend + its runtime parameters; gpu target: a TensorRT plan."""
    if options.target == "gpu":
        config.platform = "tensorrt_plan"
        config.default_model_filename = PLAN_FILE
    else:
        config.backend = "python"
        set_parameters(config, python_parameters)


def set_parameters(config: mc.ModelConfig, values: dict[str, object]) -> None:
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
    """What a ``config.pbtxt`` holds."""
    return text_format.MessageToString(config)


def parse_config_text(text: str) -> mc.ModelConfig:
    """A ``config.pbtxt``'s text back as a ModelConfig."""
    return text_format.Parse(text, mc.ModelConfig())


# --------------------------------------------------------------------------------------------- fresh-text policy


def background_embedder_config(embedder: mc.ModelConfig) -> mc.ModelConfig:
    """``embedder_background``: the python-backend ``embedder``'s config with one instance at niceness
    :data:`BACKGROUND_NICE`, which the feature_cache's background BLS calls go to under ``async``
    (larr.export.fresh_text_policy says why)."""
    config = mc.ModelConfig()
    config.CopyFrom(embedder)
    config.name = EMBEDDER_BACKGROUND_MODEL
    del config.instance_group[:]
    config.instance_group.add(kind=embedder.instance_group[0].kind, count=1)
    config.parameters[PARAM_PROCESS_NICE].string_value = str(BACKGROUND_NICE)
    return config


def has_background_embedder(policy: FreshTextPolicy, embedder: mc.ModelConfig) -> bool:
    """Whether ``policy`` adds ``embedder_background`` beside ``embedder``: async on a python-backend embedder (a
    TensorRT embedder has no stub process to renice, so the embedder itself takes the background calls)."""
    return policy is FreshTextPolicy.ASYNC and embedder.backend == "python"


def with_fresh_text_policy(
    feature_cache: mc.ModelConfig, policy: FreshTextPolicy, background: bool, busy_share: float | None = None,
    miss_deadline_ms: float | None = None,
) -> mc.ModelConfig:
    """``feature_cache``'s config answering fresh texts by ``policy``, its background calls going to
    ``embedder_background`` when ``background`` (else to the embedder); ``busy_share`` and ``miss_deadline_ms``,
    when given, replace its ``background_busy_share`` and ``miss_deadline_ms``."""
    config = mc.ModelConfig()
    config.CopyFrom(feature_cache)
    config.parameters[PARAM_FRESH_TEXT_POLICY].string_value = policy.value
    if busy_share is not None:
        config.parameters[PARAM_BACKGROUND_BUSY_SHARE].string_value = str(busy_share)
    if miss_deadline_ms is not None:
        config.parameters[PARAM_MISS_DEADLINE_MS].string_value = str(miss_deadline_ms)
    config.parameters[PARAM_BACKGROUND_EMBEDDER_MODEL].string_value = (
        EMBEDDER_BACKGROUND_MODEL if background else EMBEDDER_MODEL
    )
    return config


__all__ = [
    "background_embedder_config",
    "background_embedder_model",
    "build_configs",
    "config_text",
    "ctr_config",
    "embedder_config",
    "ensemble_config",
    "feature_cache_config",
    "has_background_embedder",
    "parse_config_text",
    "set_parameters",
    "validate_ensemble",
    "with_fresh_text_policy",
]
