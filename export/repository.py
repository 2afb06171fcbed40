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

Every ``config.pbtxt`` is a ``tritonclient.grpc.model_config_pb2.ModelConfig`` built by
:mod:`larr.export.model_configs` from the options and facts of :mod:`larr.export.options`. The python models' ``model.py`` adapters are package data
(``larr.model_repository``, found by ``larr.layout.packaged_adapters_dir``) and copied from there: the
repository is written outside the source tree (by default into the run folder, ``RUN/model_repository``).
``embedder_version`` (the first 12 hex chars of the sha256 of the exported embedder ONNX, external data
included) keys the feature cache, so a new embedder never reads stale entries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tritonclient.grpc import model_config_pb2 as mc

from larr.contract import (
    ATTENTION_MASK,
    CTR_MODEL,
    EMBEDDER_MODEL,
    EMBEDDING_CONFIG_FILE,
    ENSEMBLE_NAME,
    FEATURE_CACHE_MODEL,
    INPUT_IDS,
    ITEM_IDS,
    ITEM_NAMES_PATH,
    SCENE_EMB,
    SCENE_VOCAB_FILE,
    TOKENIZER_FILE,
)
from larr.export.embedder_precision import EmbedderPrecision
from larr.export.files import checked_adapters_dir, copy_adapters, copy_ctr_torch, copy_embedder_torch, fresh_version_dir
from larr.export.fresh_text_policy import apply_fresh_text_policy
from larr.export.model_configs import build_configs, config_text
from larr.export.options import (
    CONFIG_FILE,
    ONNX_FILE,
    PLAN_FILE,
    PYTHON_MODELS,
    REPOSITORY_MODELS,
    DatasetFacts,
    ModelFacts,
    RepositoryError,
    RepositoryOptions,
)
from larr.layout import RunLayout, Variant
from larr.serving.runtime import TORCH_RUNTIME
from larr.serving.stores.factory import StoreKind

if TYPE_CHECKING:
    from larr.tokenization import EmbeddingInputConfig

log = logging.getLogger(__name__)

TRT_OPT_BATCH = 16  # TensorRT profiles: the shapes to tune for (typical embedder batch, sequence, candidates)
TRT_OPT_SEQUENCE = 16
TRT_OPT_CANDIDATES = 100


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
    from larr.export.onnx_export import embedding_dim
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
    version_dirs = {name: fresh_version_dir(out / name) for name in REPOSITORY_MODELS}
    facts = _export_models(paths, dataset, options, scene_features, dim, version_dirs, report)

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
    copy_adapters(adapters_dir, out, PYTHON_MODELS[options.target], report)
    apply_fresh_text_policy(out, options.fresh_text_policy, report)
    report(
        f"model repository {out} ready: target {options.target}, variant {options.variant}, "
        f"embedder_version {facts.embedder_version}"
    )
    return RepositoryResult(out, options, facts, configs)


def _export_models(
    paths: CheckpointPaths, dataset: DatasetFacts, options: RepositoryOptions, scene_features: tuple[str, ...],
    dim: int, version_dirs: dict[str, Path], report: Callable[[str], None],
) -> ModelFacts:
    """The embedder and CTR graphs (ONNX into the version folders; gpu: TensorRT plans built from ONNX graphs
    kept out of the repository), and the facts about them that the configs are built from."""
    from larr.export.embedder_precision import export_embedder_at
    from larr.export.onnx_export import embedder_vocab_size, export_ctr, onnx_digest, scene_vocab_sizes

    with tempfile.TemporaryDirectory(prefix="larr-export-") as scratch:
        # gpu: the ONNX graphs are only the engines' source and stay out of the repository
        onnx_home = {name: Path(scratch) / name if options.target == "gpu" else version_dirs[name]
                     for name in REPOSITORY_MODELS}
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
    return facts


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


# The writer's interface: options in, a repository (and what was written) out.
__all__ = [
    "CheckpointPaths",
    "DatasetFacts",
    "ModelFacts",
    "RepositoryError",
    "RepositoryOptions",
    "RepositoryResult",
    "dataset_facts",
    "served_input_config",
    "write_repository",
]
