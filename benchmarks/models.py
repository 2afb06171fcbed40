"""The models behind each benchmarked LLM size, and the three Triton repositories served per size.

Per LLM size, under ``WORK/<size>/``::

    run/embed/model/        random-weight sizes: TextEmbedder(AutoModel.from_config(LlamaConfig | Qwen2Config),
                            projection_dim=64), saved with the trained run's tokenizer (token ids stay below
                            the run's vocabulary, so any embedding table serves them)
    run/ctr/larr/           random sizes: a randomly initialised LARR CTR head of the trained head's shape
    run/ctr/full_text/      random sizes (or a run without one): a random full-text CTR head (K' = 1)
    repos/larr/             write_repository(): the LARR ensemble, cache on
    repos/larr_cache_off/   the same files (hard links), feature_cache config with cache_capacity 0
    repos/fulltext/         the larr repository's embedder (hard links) + write_fulltext_repository(): larr_fulltext,
                            served by the same embedder model (its config, runtime and device)

The trained tiny size reads the run's own checkpoints. A ``bench_stamp.json`` in each folder records
what it was built from; a later run reuses a folder whose stamp matches (``rebuild`` forces a new one).
Speed does not depend on weight values, so the random models measure the speed of real LLM shapes;
every model's provenance is recorded (:attr:`SizeModels.labels`) and written next to the results.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from larr.benchmarks.config import CACHE_OFF, FULLTEXT, LARR, LLMShape
from larr.contract import FEATURE_CACHE_MODEL
from larr.errors import UserError
from larr.export.embedder_precision import EmbedderPrecision
from larr.layout import RunLayout, Variant

STAMP_FILE = "bench_stamp.json"
CTR_LARR, CTR_FULLTEXT = Variant.LARR, Variant.FULL_TEXT  # the trained CTR heads the ensembles serve


class BenchSetupError(UserError, RuntimeError):
    """The checkpoints or the dataset the benchmark needs are missing; the message says what to run."""


@dataclass(frozen=True)
class ParameterCount:
    """Parameters of a text embedder (LLM body + projection MLP)."""

    total: int
    embedding: int  # the token embedding table: a lookup, no FLOPs

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


@dataclass(frozen=True)
class EncoderShape:
    """What the FLOPs count needs from the LLM's config."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    head_dim: int


@dataclass(frozen=True)
class SizeModels:
    """Everything measured for one LLM size."""

    shape: LLMShape
    run_dir: Path  # a `larr train`-like run folder (embed/model, ctr/larr, ctr/full_text)
    embedder_dir: Path
    ctr_dirs: dict[Variant, Path]  # CTR_LARR | CTR_FULLTEXT -> LarrCTR folder
    repositories: dict[str, Path]  # LARR | CACHE_OFF | FULLTEXT -> model repository
    labels: dict[str, str]  # model -> provenance (trained / random weights)
    parameters: ParameterCount
    encoder: EncoderShape


@dataclass(frozen=True)
class BaseRun:
    """The trained run the benchmark starts from, and its dataset."""

    checkpoints: Path
    data_dir: Path
    num_users: int
    num_items: int


# --------------------------------------------------------------------------------------------- the trained run


def find_base_run(checkpoints: Path) -> BaseRun:
    """The trained run and its dataset (``config.yaml``'s ``data``, relative paths tried from the working
    directory and each folder above the run); :class:`BenchSetupError` says how to make what is missing."""
    from larr.data.schema import load_dataset_info

    checkpoints = Path(checkpoints)
    layout = RunLayout(checkpoints)
    needed = [
        layout.config_file,
        layout.embedder_dir(CTR_LARR) / "embedder.json",
        layout.ctr_dir(CTR_LARR) / "ctr.json",
    ]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise BenchSetupError(
            f"no trained run at {checkpoints} (missing {', '.join(missing)}). Run `make demo` first (it trains "
            "runs/demo/run), or pass --checkpoints with a `larr train all` run folder"
        )
    data = layout.dataset_name()
    if not data:
        raise BenchSetupError(f"{layout.config_file} names no dataset (`data:`)")
    found = layout.dataset_dir()
    if found is None:
        raise BenchSetupError(f"the dataset {data!r} of {checkpoints} is not there any more; regenerate it or retrain")
    info = load_dataset_info(found)
    return BaseRun(checkpoints.resolve(), found.resolve(), info.num_users, info.num_items)


# --------------------------------------------------------------------------------------------- building


def prepare_size(
    shape: LLMShape,
    base: BaseRun,
    work: Path,
    *,
    device: str,
    runtime: str,
    cache_capacity: int,
    max_candidates: int,
    fulltext_max_length: int,
    seed: int,
    embedder_precision: str = EmbedderPrecision.FP32.value,
    embedder_width_ratio: float = 1.0,
    rebuild: bool = False,
    progress: Callable[[str], None] = print,
) -> SizeModels:
    """Build (or reuse) the checkpoints and the three repositories of one LLM size (``runtime``: how their
    python models run the embedder and the CTR heads, "onnxruntime" or "torch"; ``embedder_width_ratio`` < 1: a
    random-weight shape's embedder pruned to that share of its widths, in a folder of its own)."""
    size_dir = Path(work).resolve() / size_folder(shape, embedder_width_ratio)
    labels: dict[str, str] = {}
    run_dir = size_run_dir(shape, base, work, embedder_width_ratio)
    layout = RunLayout(run_dir)
    build_embedder(shape, base, work, seed, rebuild, progress, embedder_width_ratio)
    if shape.trained:
        labels["embedder"] = f"trained ({display_path(layout.embedder_dir(CTR_LARR))})"
        labels["ctr"] = f"trained ({display_path(layout.ctr_dir(CTR_LARR))})"
    else:
        _build_random_ctr(base, layout.ctr_dir(CTR_LARR), llm_features=None, seed=seed, rebuild=rebuild)
        # the base run's config names the dataset, so the export finds it and writes the scene table (warm start)
        base_config = RunLayout(base.checkpoints).config_file
        if base_config.exists():
            layout.config_file.write_text(base_config.read_text(encoding="utf-8"), encoding="utf-8")
        labels["embedder"] = (
            f"{shape.label} ({shape.architecture}, hidden {shape.hidden_size}, {shape.num_hidden_layers} layers)"
            + ("" if embedder_width_ratio == 1.0 else
               f", pruned in one shot to {embedder_width_ratio:g} of its widths (what `larr train distill` makes)")
        )
        labels["ctr"] = "random weights, the trained LARR head's shape"
    ctr_dirs = {CTR_LARR: layout.ctr_dir(CTR_LARR), CTR_FULLTEXT: layout.ctr_dir(CTR_FULLTEXT)}
    if shape.trained and (ctr_dirs[CTR_FULLTEXT] / "ctr.json").exists():
        labels["fulltext_ctr"] = f"trained ({display_path(ctr_dirs[CTR_FULLTEXT])})"
    else:
        ctr_dirs[CTR_FULLTEXT] = RunLayout(size_dir / "run").ctr_dir(CTR_FULLTEXT)
        _build_random_ctr(base, ctr_dirs[CTR_FULLTEXT], llm_features=1, seed=seed, rebuild=rebuild)
        labels["fulltext_ctr"] = "random weights, the LARR head's shape with one scene embedding (K' = 1)"
    embedder_dir = layout.embedder_dir(CTR_LARR)

    # another precision gets its own folder: switching back and forth would otherwise re-export each time
    fp32 = embedder_precision == EmbedderPrecision.FP32.value
    repos_dir = size_dir / ("repos" if fp32 else f"repos-{embedder_precision}")
    repositories = {name: repos_dir / name for name in (LARR, CACHE_OFF, FULLTEXT)}
    stamp = {
        "shape": dataclasses.asdict(shape),
        "sources": _fingerprint([embedder_dir, *ctr_dirs.values()]),
        "device": device,
        "runtime": runtime,
        **({} if fp32 else {"embedder_precision": embedder_precision}),  # fp32: the stamps of earlier runs hold
        "cache_capacity": cache_capacity,
        "max_candidates": max_candidates,
        "fulltext_max_length": fulltext_max_length,
        "scene_table": True,  # repositories exported before the scene table existed are rebuilt
        # what the export copies and writes: a changed adapter or config writer means a rebuild, or the run
        # would serve the code of an earlier checkout
        "serving_code": _content_digest(_serving_code()),
    }
    _build_repositories(base, run_dir, ctr_dirs, repositories, stamp, device, runtime, embedder_precision,
                        cache_capacity, max_candidates, fulltext_max_length, rebuild, progress)
    return SizeModels(
        shape=shape,
        run_dir=run_dir,
        embedder_dir=embedder_dir,
        ctr_dirs=ctr_dirs,
        repositories=repositories,
        labels=labels,
        parameters=count_parameters(embedder_dir),
        encoder=encoder_shape(embedder_dir),
    )


def size_folder(shape: LLMShape, width_ratio: float = 1.0) -> str:
    """``WORK/<this>`` holds a size's models: its name, or e.g. ``smollm-135m-w0.5`` for its embedder pruned to half
    its widths (so switching back and forth does not rebuild either)."""
    return shape.name if width_ratio == 1.0 else f"{shape.name}-w{width_ratio:g}"


def size_run_dir(shape: LLMShape, base: BaseRun, work: Path, width_ratio: float = 1.0) -> Path:
    """The run folder of a size's models: the trained run itself, or ``WORK/<size folder>/run`` for a random-weight
    shape (laid out like a trained run)."""
    if shape.trained and width_ratio != 1.0:
        raise ValueError(f"a width ratio applies to random-weight shapes; {shape.name} is the trained run "
                         "(`larr train distill` makes its narrower embedder)")
    return base.checkpoints if shape.trained else Path(work).resolve() / size_folder(shape, width_ratio) / "run"


def build_embedder(
    shape: LLMShape, base: BaseRun, work: Path, seed: int, rebuild: bool = False, progress: Callable[[str], None] = print,
    width_ratio: float = 1.0,
) -> Path:
    """The TextEmbedder folder of ``shape``: the trained run's, or a random-weight one built (or reused while its
    stamp matches) under ``work``, where :func:`prepare_size` finds it."""
    embedder_dir = RunLayout(size_run_dir(shape, base, work, width_ratio)).embedder_dir(CTR_LARR)
    if not shape.trained:
        _build_random_embedder(shape, base, embedder_dir, seed, rebuild, progress, width_ratio)
    return embedder_dir


def _build_random_embedder(
    shape: LLMShape, base: BaseRun, out: Path, seed: int, rebuild: bool, progress, width_ratio: float = 1.0
) -> None:
    tokenizer_file = RunLayout(base.checkpoints).embedder_dir(CTR_LARR) / "tokenizer.json"
    stamp = {"shape": dataclasses.asdict(shape), "seed": seed, "tokenizer": _fingerprint([tokenizer_file]),
             **({} if width_ratio == 1.0 else {"width_ratio": width_ratio})}  # 1: the stamps of earlier runs hold
    if not rebuild and _stamp_matches(out, stamp):
        return
    import torch
    from transformers import AutoModel, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

    from larr.models.embedder import TextEmbedder
    from larr.tokenization import EmbeddingInputConfig

    progress(f"building a random-weight {shape.label} embedder -> {out}")
    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config}[shape.architecture]
    source = RunLayout(base.checkpoints).embedder_dir(CTR_LARR)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
    config = config_class(
        **shape.config_kwargs(),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    embedder = TextEmbedder(AutoModel.from_config(config), projection_dim=shape.projection_dim).eval()
    if width_ratio != 1.0:
        from larr.training.prune import prune_in_one_shot

        embedder = prune_in_one_shot(embedder, width_ratio).eval()
    if out.exists():
        shutil.rmtree(out)
    embedder.save_pretrained(out, tokenizer, EmbeddingInputConfig.load(source))
    del embedder
    gc.collect()
    _write_stamp(out, stamp)


def _build_random_ctr(base: BaseRun, out: Path, llm_features: int | None, seed: int, rebuild: bool) -> None:
    """A randomly initialised LarrCTR with the trained LARR head's spec (``llm_features`` overrides K')."""
    source = RunLayout(base.checkpoints).ctr_dir(CTR_LARR)
    stamp = {
        "source": _fingerprint([source / "ctr.json", source / "vocab.json"]), "llm_features": llm_features, "seed": seed,
    }
    if not rebuild and _stamp_matches(out, stamp):
        return
    import torch

    from larr.models.ctr_model import CTRModelSpec, LarrCTR

    spec = CTRModelSpec(**json.loads((source / "ctr.json").read_text(encoding="utf-8")))
    if llm_features is not None:
        spec = dataclasses.replace(spec, variant=CTR_FULLTEXT.value, llm_features=llm_features)
    vocab = json.loads((source / "vocab.json").read_text(encoding="utf-8"))
    torch.manual_seed(seed)
    if out.exists():
        shutil.rmtree(out)
    LarrCTR(spec).eval().save(out, vocab)
    _write_stamp(out, stamp)


def _build_repositories(
    base: BaseRun, run_dir: Path, ctr_dirs: dict[str, Path], repositories: dict[str, Path], stamp: dict, device: str,
    runtime: str, embedder_precision: str, cache_capacity: int, max_candidates: int, fulltext_max_length: int,
    rebuild: bool, progress,
) -> None:
    from larr.benchmarks.fulltext_repository import write_fulltext_repository
    from larr.contract import CTR_MODEL, EMBEDDER_MODEL, ENSEMBLE_NAME
    from larr.export.options import ONNX_FILE, VERSION
    from larr.export.repository import RepositoryOptions, write_repository

    if not rebuild and all(_stamp_matches(path, stamp) for path in repositories.values()):
        progress(f"reusing the repositories in {repositories[LARR].parent} (stamps match)")
        return
    quiet = lambda line: None  # noqa: E731 -- the exporters' per-file lines would drown the progress
    progress(f"exporting {repositories[LARR]} (ONNX, parity-checked; {embedder_precision} embedder served by "
             f"{runtime} on {device})")
    options = RepositoryOptions(
        target="cpu", device=device, runtime=runtime, embedder_precision=embedder_precision,
        cache_capacity=cache_capacity, max_candidates=max_candidates,
    )
    result = write_repository(
        run_dir, repositories[LARR], options, num_users=base.num_users, num_items=base.num_items, progress=quiet
    )
    _write_stamp(repositories[LARR], stamp)

    progress(f"writing {repositories[CACHE_OFF]} (cache_capacity 0)")
    _copy_with_links(repositories[LARR], repositories[CACHE_OFF])
    write_cache_capacity(repositories[CACHE_OFF], result, 0)
    _write_stamp(repositories[CACHE_OFF], stamp)

    progress(f"exporting {repositories[FULLTEXT]} (full-text baseline)")
    # Served the same way: the baseline is added to a linked copy of the larr repository, so its ensemble calls
    # the very same embedder model (config, runtime, device, artifacts); the larr-only models are left out.
    _copy_with_links(repositories[LARR], repositories[FULLTEXT])
    for name in (ENSEMBLE_NAME, FEATURE_CACHE_MODEL, CTR_MODEL):
        shutil.rmtree(repositories[FULLTEXT] / name)
    write_fulltext_repository(
        run_dir, repositories[FULLTEXT], ctr_dir=ctr_dirs[CTR_FULLTEXT],
        embedder_onnx=repositories[FULLTEXT] / EMBEDDER_MODEL / VERSION / ONNX_FILE, max_length=fulltext_max_length,
        max_candidates=max_candidates, device=device, runtime=runtime, num_users=base.num_users,
        num_items=base.num_items, progress=quiet,
    )
    _write_stamp(repositories[FULLTEXT], stamp)


def write_cache_capacity(repository: Path, result, capacity: int) -> None:
    """Rewrite ``feature_cache/config.pbtxt`` of an exported repository with another cache bound."""
    from larr.export.model_configs import build_configs, config_text
    from larr.export.options import CONFIG_FILE
    from larr.serving.stores.factory import StoreKind

    # capacity 0 is the cache-off variant: no scene table either, every lookup needs the embedder
    store = StoreKind.LRU if capacity == 0 else result.options.scene_store
    options = dataclasses.replace(result.options, cache_capacity=capacity, scene_store=store)
    path = repository / FEATURE_CACHE_MODEL / CONFIG_FILE
    path.unlink()  # it may be a hard link to the cache-on repository's file
    path.write_text(config_text(build_configs(options, result.facts)[FEATURE_CACHE_MODEL]), encoding="utf-8")


def _copy_with_links(source: Path, target: Path) -> None:
    """Copy a folder tree, hard-linking the files (an exported 0.5B embedder is 2 GB)."""
    from larr.export.files import link_or_copy

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, copy_function=link_or_copy, ignore=shutil.ignore_patterns(STAMP_FILE, "__pycache__"))


# --------------------------------------------------------------------------------------------- facts


def count_parameters(embedder_dir: Path) -> ParameterCount:
    """Parameters of a saved TextEmbedder, read from the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = embedding = 0
    encoder = sorted((Path(embedder_dir) / "encoder").glob("*.safetensors"))
    files = encoder + sorted(Path(embedder_dir).glob("projection.safetensors"))
    if not files:
        raise BenchSetupError(f"{embedder_dir}: no safetensors weights")
    for path in files:
        with safe_open(str(path), framework="np") as handle:
            for name in handle.keys():
                count = 1
                for dim in handle.get_slice(name).get_shape():
                    count *= dim
                total += count
                if "embed_tokens" in name:
                    embedding += count
    return ParameterCount(total=total, embedding=embedding)


def encoder_shape(embedder_dir: Path) -> EncoderShape:
    config = json.loads((Path(embedder_dir) / "encoder" / "config.json").read_text(encoding="utf-8"))
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    return EncoderShape(int(config["hidden_size"]), int(config["num_hidden_layers"]), heads, head_dim)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (results are committed)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _fingerprint(paths: list[Path]) -> list[list]:
    """(path, size, mtime) of every file under ``paths``: enough to notice a retrained model."""
    out = []
    for root in paths:
        files = sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).is_dir() else [Path(root)]
        for path in files:
            if path.name == STAMP_FILE or not path.exists():
                continue
            stat = path.stat()
            out.append([str(path.resolve()), stat.st_size, int(stat.st_mtime)])
    return out


def _serving_code() -> list[Path]:
    from larr.export import files, fresh_text_policy, model_configs, options, repository
    from larr.layout import packaged_adapters_dir

    adapters = sorted(packaged_adapters_dir().rglob("model.py"))
    return [*adapters, *(Path(module.__file__) for module in (options, model_configs, files, fresh_text_policy, repository))]


def _content_digest(paths: list[Path]) -> str:
    """sha256 over the code of the Python files ``paths`` (in order): unlike mtimes, the same for the same code in
    any checkout; comments, docstrings and formatting do not count (a reworded docstring re-exported the 135M
    shape's repositories for minutes)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(_code_of(path.read_text(encoding="utf-8")).encode())
    return digest.hexdigest()[:16]


def _code_of(source: str) -> str:
    """``source``'s syntax tree without docstrings, as text."""
    import ast

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _stamp_matches(folder: Path, stamp: dict) -> bool:
    path = Path(folder) / STAMP_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(stamp))
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def _write_stamp(folder: Path, stamp: dict) -> None:
    (Path(folder) / STAMP_FILE).write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
