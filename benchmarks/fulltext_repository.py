"""The full-text baseline's model repository: the ensemble ``larr_fulltext`` with LARR's public contract.

    from larr.benchmarks.fulltext_repository import write_fulltext_repository

    write_fulltext_repository(Path("runs/demo/run"), Path("out/fulltext_repository"))
    python -m larr.benchmarks.fulltext_repository --checkpoints runs/demo/run --out out/fulltext_repository

What LARR avoids, served the same way: per request the LLM embeds the whole concatenated scene
(``larr.text.format_scene``) with no cache, then a CTR head trained on that one embedding (stage 3's
``full_text`` variant, K' = 1). Same inputs and outputs as ``larr`` (SCENE_TEXT [K], USER_ID [1],
ITEM_IDS [N] -> CTR [N]), so the same client and the same perf_analyzer data drive both. Layout::

    OUT/larr_fulltext/config.pbtxt    ensemble: fulltext_embed -> fulltext_ctr
    OUT/fulltext_embed/config.pbtxt   python: SCENE_TEXT [-1] -> SCENE_EMB [1, D], SCENE_IDS [-1]; BLS to embedder
    OUT/fulltext_embed/1/             tokenizer.json, embedding_config.json (whole-scene max_length),
                                      scene_vocab.json, model.py
    OUT/embedder/                     the same embedder model as the larr repository (config and ONNX)
    OUT/fulltext_ctr/config.pbtxt     the ctr config with SCENE_EMB [1, D]; the ctr adapter
    OUT/fulltext_ctr/1/               model.onnx (the full_text CTR head) + model.py

Python-backend models only (``--target cpu``; ``device='cuda'`` runs them on a GPU with ONNX Runtime, or with
PyTorch under ``runtime='torch'``): the benchmark compares like with like, and the pytriton bundle has no
TensorRT backend anyway.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from larr.benchmarks.config import FULLTEXT_MAX_LENGTH
from larr.contract import (
    CTR_MODEL,
    EMBEDDER_MODEL,
    EMBEDDING_CONFIG_FILE,
    PARAM_EMBEDDER_MAX_BATCH,
    PARAM_EMBEDDER_MODEL,
    PARAM_EMBEDDER_VERSION,
    PARAM_SCENE_FEATURES,
    SCENE_EMB,
    SCENE_IDS,
    SCENE_TEXT,
    SCENE_VOCAB_FILE,
    TOKENIZER_FILE,
)
from larr.export.files import checked_adapters_dir, copy_ctr_torch, copy_embedder_torch, fresh_version_dir, link_or_copy
from larr.export.model_configs import (
    config_text,
    ctr_config,
    embedder_config,
    ensemble_config,
    set_parameters,  # the one way a builder writes Triton parameters (strings)
    validate_ensemble,
)
from larr.export.options import ADAPTER_FILE, CONFIG_FILE, ONNX_FILE, VERSION, ModelFacts, RepositoryError, RepositoryOptions
from larr.export.repository import RepositoryResult, dataset_facts, served_input_config
from larr.layout import RunLayout, Variant, package_folder
from larr.serving.runtime import RUNTIMES, TORCH_RUNTIME

log = logging.getLogger(__name__)

FULLTEXT_ENSEMBLE_NAME = "larr_fulltext"  # same public tensors and parameters as the "larr" ensemble
FULLTEXT_EMBED_MODEL = "fulltext_embed"
FULLTEXT_CTR_MODEL = "fulltext_ctr"

FULLTEXT_ADAPTERS = "adapters"  # package data of larr.benchmarks: <model>/1/model.py of the baseline's own steps
FULLTEXT_VARIANT = Variant.FULL_TEXT  # stage 3's variant with one whole-scene embedding
MODELS = (FULLTEXT_ENSEMBLE_NAME, FULLTEXT_EMBED_MODEL, EMBEDDER_MODEL, FULLTEXT_CTR_MODEL)
# Model -> the committed adapter it runs (the CTR head reuses the ctr adapter unchanged).
ADAPTERS = {FULLTEXT_EMBED_MODEL: FULLTEXT_EMBED_MODEL, EMBEDDER_MODEL: EMBEDDER_MODEL, FULLTEXT_CTR_MODEL: CTR_MODEL}


# --------------------------------------------------------------------------------------------- configs


def build_fulltext_configs(options: RepositoryOptions, facts: ModelFacts) -> dict[str, mc.ModelConfig]:
    """Model name -> ModelConfig of the full-text repository. ``facts.scene_inputs`` must be 1."""
    if options.target != "cpu":
        raise RepositoryError(
            "the full-text baseline is served by python-backend models: use target 'cpu' (device 'cuda' on a GPU)"
        )
    if facts.scene_inputs != 1:
        raise RepositoryError(f"the full-text CTR head must read one scene embedding; its graph takes {facts.scene_inputs}")
    configs = {
        FULLTEXT_ENSEMBLE_NAME: ensemble_config(
            options, facts, name=FULLTEXT_ENSEMBLE_NAME, scene_model=FULLTEXT_EMBED_MODEL, ctr_model=FULLTEXT_CTR_MODEL,
            scene_inputs=(SCENE_TEXT,),  # the ids are checked by the fulltext_ctr step (the ctr adapter)
        ),
        FULLTEXT_EMBED_MODEL: fulltext_embed_config(options, facts),
        EMBEDDER_MODEL: embedder_config(options, facts),
        FULLTEXT_CTR_MODEL: ctr_config(options, facts, name=FULLTEXT_CTR_MODEL),
    }
    validate_ensemble(configs[FULLTEXT_ENSEMBLE_NAME], configs)
    return configs


def fulltext_embed_config(options: RepositoryOptions, facts: ModelFacts) -> mc.ModelConfig:
    # batched like feature_cache: one execute() serves many requests (each [1, K] texts) and sends their
    # whole-scene texts to the embedder in one call.
    config = mc.ModelConfig(name=FULLTEXT_EMBED_MODEL, backend="python", max_batch_size=options.request_batch)
    config.input.add(name=SCENE_TEXT, data_type=mc.TYPE_STRING, dims=[-1])
    config.output.add(name=SCENE_EMB, data_type=mc.TYPE_FP32, dims=[1, facts.embedding_dim])
    config.output.add(name=SCENE_IDS, data_type=mc.TYPE_INT64, dims=[-1])
    set_parameters(config, {
        PARAM_SCENE_FEATURES: json.dumps(list(facts.scene_features)),
        PARAM_EMBEDDER_MODEL: EMBEDDER_MODEL,
        PARAM_EMBEDDER_MAX_BATCH: options.embedder_max_batch,
        PARAM_EMBEDDER_VERSION: facts.embedder_version,
    })
    if options.request_batch:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    # as many instances as feature_cache, so the comparison stays like for like
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=options.feature_cache_instances)
    return config


# --------------------------------------------------------------------------------------------- writing


def write_fulltext_repository(
    checkpoints: Path,
    out: Path,
    *,
    ctr_dir: Path | None = None,
    embedder_onnx: Path | None = None,
    max_length: int = FULLTEXT_MAX_LENGTH,
    max_candidates: int = RepositoryOptions.max_candidates,  # the larr repository's defaults: like for like
    embedder_max_batch: int = RepositoryOptions.embedder_max_batch,
    device: str = RepositoryOptions.device,
    runtime: str = RepositoryOptions.runtime,
    intra_op_threads: int = RepositoryOptions.intra_op_threads,
    num_users: int | None = None,
    num_items: int | None = None,
    feature_cache_instances: int = RepositoryOptions.feature_cache_instances,
    adapters_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> RepositoryResult:
    """Write the full-text baseline's repository ``out`` (layout: module docstring) from a run.

    ``ctr_dir`` defaults to the run's ``ctr/full_text``. ``embedder_onnx``: an embedder graph already
    exported from the same run (e.g. the larr repository's), hard-linked (else copied) with its
    external data instead of exporting the embedder again; it must come from ``checkpoints/embed/model``.
    When it is ``out/embedder/1/model.onnx`` itself, ``out`` is an exported larr repository and the
    baseline is added to it: its ``embedder`` model is used as it is, and both ensembles are served
    by one server.
    ``runtime`` ("onnxruntime" | "torch") is how the python models run the embedder and the CTR head; a
    shared embedder keeps the larr repository's.
    """
    from larr.export.onnx_export import (
        describe_inputs,
        embedder_vocab_size,
        embedding_dim,
        export_ctr,
        export_embedder,
        onnx_digest,
        scene_vocab_sizes,
    )
    from larr.models.ctr_model import SPEC_FILE, VOCAB_FILE
    from larr.models.embedder import EMBEDDER_FILE

    report = progress or log.info
    options = RepositoryOptions(
        target="cpu", max_candidates=max_candidates, embedder_max_batch=embedder_max_batch, device=device,
        runtime=runtime, intra_op_threads=intra_op_threads, cache_capacity=0, feature_cache_instances=feature_cache_instances,
    )
    if max_length < 2:
        raise RepositoryError(f"max_length must be >= 2 (a text and <emb>), got {max_length}")
    checkpoints, out = Path(checkpoints), Path(out)
    adapters_dir = checked_adapters_dir(adapters_dir, out)
    layout = RunLayout(checkpoints)
    embedder_dir = layout.embedder_dir(FULLTEXT_VARIANT)
    ctr_dir = Path(ctr_dir) if ctr_dir is not None else layout.ctr_dir(FULLTEXT_VARIANT)
    if not (embedder_dir / EMBEDDER_FILE).exists():
        raise RepositoryError(f"{embedder_dir}: no trained embedder; run `larr train embed --out {checkpoints}`")
    if not (ctr_dir / SPEC_FILE).exists():
        raise RepositoryError(
            f"{ctr_dir}: no full-text CTR model; run `larr train ctr --out {checkpoints}` with {FULLTEXT_VARIANT} in "
            "ctr.variants"
        )
    for model, adapter in ADAPTERS.items():
        if not _adapter_source(adapters_dir, adapter).exists():
            raise RepositoryError(f"{_adapter_source(adapters_dir, adapter)}: adapter of {model!r} missing")
    dataset = dataset_facts(checkpoints, num_users, num_items)
    vocab = json.loads((ctr_dir / VOCAB_FILE).read_text(encoding="utf-8"))
    scene_features = tuple(vocab["fields"][2:])  # fields are [user, item, *scene features]
    dim = embedding_dim(embedder_dir)
    target_onnx = out / EMBEDDER_MODEL / VERSION / ONNX_FILE
    shared_embedder = embedder_onnx is not None and Path(embedder_onnx).resolve() == target_onnx.resolve()
    models = [name for name in MODELS if not (shared_embedder and name == EMBEDDER_MODEL)]
    version_dirs = {name: fresh_version_dir(out / name) for name in models}

    if shared_embedder:
        if not target_onnx.is_file():
            raise RepositoryError(f"{target_onnx}: no exported embedder to share; run `larr export --out {out}` first")
        report(f"embedder: {target_onnx} (shared with the larr ensemble)")
    elif embedder_onnx is None:
        export_embedder(embedder_dir, target_onnx)
        report(f"embedder: {target_onnx} (from {embedder_dir})")
    else:
        _link_onnx(Path(embedder_onnx), target_onnx)
        report(f"embedder: {target_onnx} (linked from {embedder_onnx})")
    if runtime == TORCH_RUNTIME and not shared_embedder:
        copy_embedder_torch(embedder_dir, version_dirs[EMBEDDER_MODEL], report)
    ctr_onnx = version_dirs[FULLTEXT_CTR_MODEL] / ONNX_FILE
    export_ctr(ctr_dir, dataset.num_users, dataset.num_items, ctr_onnx, scene_dim=dim, batched=options.request_batch > 0)
    report(f"{FULLTEXT_CTR_MODEL}: {ctr_onnx} (from {ctr_dir})")
    if runtime == TORCH_RUNTIME:
        copy_ctr_torch(ctr_dir, dataset, version_dirs[FULLTEXT_CTR_MODEL], report)
    facts = ModelFacts(
        scene_features=scene_features,
        embedding_dim=dim,
        scene_inputs=int(describe_inputs(ctr_onnx)[SCENE_EMB][-2]),
        embedder_version=onnx_digest(target_onnx),
        max_length=max_length,
        vocab_size=embedder_vocab_size(embedder_dir),
        scene_vocab_sizes=scene_vocab_sizes(ctr_dir),
    )

    embed_dir = version_dirs[FULLTEXT_EMBED_MODEL]
    shutil.copy2(embedder_dir / TOKENIZER_FILE, embed_dir / TOKENIZER_FILE)
    # Same tokenizer, padding and template as the served per-feature inputs; only the length fits a whole scene.
    served_input_config(embedder_dir, options, max_length=max_length).save(embed_dir)
    scene_vocab = {"fields": vocab["fields"][2:], "values": vocab["values"][2:]}
    (embed_dir / SCENE_VOCAB_FILE).write_text(json.dumps(scene_vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    report(f"{FULLTEXT_EMBED_MODEL}: {embed_dir} ({TOKENIZER_FILE}, {EMBEDDING_CONFIG_FILE}, {SCENE_VOCAB_FILE})")

    configs = build_fulltext_configs(options, facts)
    for name in models:  # a shared embedder keeps the larr repository's config (the same one)
        (out / name / CONFIG_FILE).write_text(config_text(configs[name]), encoding="utf-8")
    for model, adapter in ADAPTERS.items():
        source, target = _adapter_source(adapters_dir, adapter), out / model / VERSION / ADAPTER_FILE
        if model in version_dirs:
            shutil.copy2(source, target)
    report(f"full-text repository {out} ready: embedder_version {facts.embedder_version}")
    return RepositoryResult(out, options, facts, configs)


def _adapter_source(adapters_dir: Path, adapter: str) -> Path:
    """An adapter's model.py: from ``adapters_dir`` if it has one, else the baseline's own adapters (package
    data of larr.benchmarks, beside the harness that serves them rather than among the product's adapters)."""
    source = adapters_dir / adapter / VERSION / ADAPTER_FILE
    return source if source.exists() else package_folder(__package__) / FULLTEXT_ADAPTERS / adapter / VERSION / ADAPTER_FILE


def _link_onnx(source: Path, target: Path) -> None:
    """Hard-link (else copy) an ONNX graph and its external data file, if any."""
    from larr.export.onnx_export import external_data_path, onnx_files

    if not source.is_file():
        raise RepositoryError(f"{source}: no such embedder graph")
    sources = onnx_files(source)
    # The graph names its data file, so a graph with external data keeps its file name.
    if len(sources) > 1 and source.name != target.name:
        raise RepositoryError(f"{source} has external data: link it to a file named {source.name}, not {target.name}")
    for path, destination in zip(sources, (target, external_data_path(target))):
        link_or_copy(path, destination)


# --------------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m larr.benchmarks.fulltext_repository", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", required=True, type=Path, help="run folder of `larr train`")
    parser.add_argument("--out", required=True, type=Path, help="repository folder to write")
    parser.add_argument("--max-length", type=int, default=FULLTEXT_MAX_LENGTH, help="tokens per whole-scene text")
    parser.add_argument("--device", default=RepositoryOptions.device, help="'cpu' or 'cuda[:N]' for the embedder and ctr")
    parser.add_argument("--runtime", default=RepositoryOptions.runtime, choices=RUNTIMES, help="how the python models run them")
    parser.add_argument("--num-users", type=int, help="user id range (default: from the run's dataset)")
    parser.add_argument("--num-items", type=int, help="item id range (default: from the run's dataset)")
    args = parser.parse_args(argv)
    try:
        write_fulltext_repository(
            args.checkpoints, args.out, max_length=args.max_length, device=args.device, runtime=args.runtime, num_users=args.num_users,
            num_items=args.num_items, progress=lambda line: print(line, flush=True),
        )
    except (RepositoryError, ValueError) as error:
        print(f"larr.benchmarks.fulltext_repository: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
