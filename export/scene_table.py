"""The scene table: every known scene text embedded offline, so the LLM stays off the request path.

    larr embed-scenes --checkpoints runs/tiny --out runs/tiny/scene_table
    larr embed-scenes --checkpoints runs/tiny --out DIR --extra-texts logs/scenes.jsonl --device cuda --batch-size 4096
    larr embed-scenes --checkpoints runs/tiny --out DIR --embedder-precision int8   # rows of the served int8 graph

Every distinct ``(scene feature, text)`` of the run's dataset (train, valid and test) plus those of an
optional extra-texts file is clipped to the tokenizer's ``max_text_chars`` (``larr.serving.stores.protocol.scene_key``),
formatted with ``larr.text.format_scene_feature`` and tokenised with ``EmbeddingTokenizer`` -- exactly as the feature
cache does before its embedder call -- then embedded shortest first in large batches (little padding) by the trained
TextEmbedder: fp32 on CPU, bf16 autocast on CUDA. Rows are stored as float32: the table must return what the served
fp32 embedder would, and fp16's AUC cost is not measured.

Extra texts are JSON lines, one object per line, ``{"feature": "weather", "text": "light drizzle"}`` (JSON because
logged texts may hold tabs and newlines); blank lines are skipped; an unknown feature or an empty text is an error
naming the line.

The table is *versioned* by the embedder: ``embedder_version`` must be what the served feature cache
keys with, the ``onnx_digest`` of the exported embedder ONNX. Output files and their format: :mod:`larr.serving.stores.table`
(which loads them). The CLI prints texts/s, tokens/s and MFU (model FLOPs/s over a short matmul's peak on the device).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from larr.choices import ChoiceEnum
from larr.contract import SCENE_TABLE_FILE, SCENE_TABLE_INDEX_FILE
from larr.data.schema import Dataset, load_dataset
from larr.errors import UserError
from larr.export.embedder_precision import EmbedderPrecision
from larr.layout import RunLayout, Variant
from larr.serving.stores.protocol import SceneKey, scene_key
from larr.serving.stores.table import TABLE_FORMAT, TABLE_HASH, TABLE_TENSOR, table_key_hash
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer

DEVICES = ("cpu", "cuda")
ROW_DTYPES = ("float32", "float16")


class SceneTableEngine(ChoiceEnum):
    """Who computes the table: this process (``local``), or a Ray cluster (``ray``: larr.export.ray_engine)."""

    LOCAL = "local"
    RAY = "ray"

    @classmethod
    def choice_name(cls) -> str:
        return "--engine"


@dataclass
class SceneTableOptions:
    """How ``larr embed-scenes`` embeds; every field is a CLI flag."""

    batch_size: int = field(default=512, metadata={"help": "texts per forward pass (sorted by length: little padding)"})
    device: str = field(default="cpu", metadata={"help": "cpu (fp32) or cuda[:N] (bf16 autocast)"})
    dtype: str = field(default="float32", metadata={"help": "row type on disk: float32, or float16 (half the bytes)"})
    measure_peak: bool = field(default=True, metadata={"help": "time a short matmul for the MFU denominator"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile each transformer layer first (one layer's compile time; pays off on large CUDA tables)"})

    def __post_init__(self) -> None:
        self.device = str(self.device).strip().lower()
        if self.device.split(":")[0] not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {self.device!r}")
        self.dtype = str(self.dtype).strip().lower()
        if self.dtype not in ROW_DTYPES:
            raise ValueError(f"dtype must be one of {ROW_DTYPES}, got {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class Throughput:
    texts: int
    tokens: int  # real tokens (attention mask ones), <emb> included; padding excluded
    seconds: float
    model_flops: float  # forward FLOPs over the real tokens
    peak_flops: float | None  # the device's measured matmul FLOP/s; None when not measured

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def mfu(self) -> float | None:
        if not self.peak_flops or self.seconds <= 0:
            return None
        return self.model_flops / self.seconds / self.peak_flops

    def to_json(self) -> dict:
        return {
            "texts": self.texts, "tokens": self.tokens, "seconds": self.seconds, "model_flops": self.model_flops,
            "peak_flops": self.peak_flops, "texts_per_s": self.texts_per_s, "tokens_per_s": self.tokens_per_s,
            "mfu": self.mfu,
        }

    def summary(self) -> str:
        mfu = "n/a" if self.mfu is None else f"{100 * self.mfu:.2f}%"
        return (
            f"{self.texts} texts, {self.tokens} tokens in {self.seconds:.2f} s: {self.texts_per_s:,.0f} texts/s, "
            f"{self.tokens_per_s:,.0f} tokens/s, MFU {mfu}"
        )


@dataclass(frozen=True)
class SceneTableResult:
    out_dir: Path
    embedder_version: str
    rows: int
    dim: int
    throughput: Throughput


class SceneTableError(UserError, ValueError):
    """Bad input to the table builder (an extra-texts line, a missing run folder); the message says where."""


# --------------------------------------------------------------------------------------------- texts


def read_extra_texts(path: str | Path, scene_features: Sequence[str]) -> list[tuple[int, str]]:
    """``(feature index, text)`` per line of a JSON-lines file of ``{"feature": name, "text": str}``."""
    path = Path(path)
    index = {name: k for k, name in enumerate(scene_features)}
    out = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise SceneTableError(f"{path}:{line_no}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise SceneTableError(f'{path}:{line_no}: expected {{"feature": name, "text": string}}')
            feature = record.get("feature")
            if feature not in index:
                raise SceneTableError(f"{path}:{line_no}: unknown scene feature {feature!r}; known: {list(scene_features)}")
            if not record["text"].strip():  # the feature cache rejects empty texts: no key can ever ask for one
                raise SceneTableError(f"{path}:{line_no}: empty text for {feature}")
            out.append((index[feature], record["text"]))
    return out


def distinct_scene_keys(
    dataset: Dataset, embedder_version: str, max_text_chars: int, extra: Iterable[tuple[int, str]] = ()
) -> list[SceneKey]:
    """Distinct keys (``scene_key``: clipped texts) of every split plus ``extra``, sorted (a reproducible table)."""
    keys: set[SceneKey] = set()
    for split in dataset.splits.values():
        for k, column in enumerate(split.scene):
            keys.update(scene_key(embedder_version, k, text, max_text_chars) for text in set(column))
    keys.update(scene_key(embedder_version, k, text, max_text_chars) for k, text in extra)
    return sorted(keys)


# --------------------------------------------------------------------------------------------- FLOPs


def forward_flops_per_token(encoder_config, non_embedding_params: int, context: float) -> float:
    """``2 N + 2 n_layer n_ctx d_attn`` (Kaplan et al. 2020, table 1), as larr.benchmarks counts it."""
    heads = encoder_config.num_attention_heads
    head_dim = getattr(encoder_config, "head_dim", None) or encoder_config.hidden_size // heads
    return 2.0 * non_embedding_params + 2.0 * encoder_config.num_hidden_layers * context * heads * head_dim


def encoder_non_embedding_parameters(embedder) -> int:
    """The encoder's parameters minus its input embedding table (a lookup, no FLOPs): N per token."""
    total = sum(p.numel() for p in embedder.encoder.parameters())
    return total - embedder.encoder.get_input_embeddings().weight.numel()


def projection_flops(embedder) -> float:
    """Forward FLOPs of the projection MLP, which runs once per text (on the pooled state), not per token."""
    return 2.0 * sum(p.numel() for p in embedder.projection.parameters())


def text_flops_counter(embedder) -> Callable[[np.ndarray], float]:
    """``lengths (B,) -> FLOPs`` of a batch: a text of n real tokens costs n tokens at causal context (n+1)/2 (token i
    attends to i+1 positions) plus one projection (on the pooled state). Vectorised: it runs inside the timed loop."""
    config = embedder.encoder.config
    non_embedding = encoder_non_embedding_parameters(embedder)
    per_text = projection_flops(embedder)

    def flops(lengths: np.ndarray) -> float:
        n = np.asarray(lengths, dtype=np.float64)  # (B,)
        return float((n * forward_flops_per_token(config, non_embedding, (n + 1) / 2)).sum() + per_text * len(n))

    return flops


def compile_layers(embedder) -> int:
    """``torch.compile`` each transformer layer of the encoder in place; returns how many.

    Regional compilation: the layers are instances of one class (the model's ``_no_split_modules``), so they share
    one compiled graph and the compile costs one layer's time, not the whole model's. ``dynamic=True``: batch size
    and padded width change from batch to batch. Eager is what runs elementwise work (norms, rotary, SiLU) as one
    kernel per op; compiled, those fuse, which is most of what a ~1B-parameter model's short texts spend beyond
    its matmuls."""
    names = set(getattr(embedder.encoder, "_no_split_modules", None) or ())
    layers = [module for module in embedder.encoder.modules() if type(module).__name__ in names]
    if not layers:
        raise ValueError(f"{type(embedder.encoder).__name__} names no repeated layer (_no_split_modules) to compile")
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def matmul_peak_flops(device: str, size: int | None = None, repetitions: int = 5) -> float:
    """Best FLOP/s of square matmuls in the dtype the embedder runs in (fp32 CPU, bf16 CUDA).

    ``size`` defaults to 2048 on the CPU and 8192 on CUDA: a 2048^3 bf16 product lasts ~20 us on an
    H100/H200, shorter than a launch plus a synchronisation, so timing it alone would report about half
    the peak (and so twice the MFU). On CUDA each timing covers ``repetitions`` back-to-back products
    between two synchronisations, after as many untimed ones (clocks ramp up from idle)."""
    import torch

    cuda = device.startswith("cuda")
    size = size or (8192 if cuda else 2048)
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    per_timing = repetitions if cuda else 1
    best = 0.0
    with torch.inference_mode():
        for trial in range(repetitions + 1):  # the first is a warm-up
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            for _ in range(per_timing):
                a @ b
            if cuda:
                torch.cuda.synchronize(device)
            if trial:
                best = max(best, per_timing * 2.0 * size**3 / (time.perf_counter() - t0))
    return best


# --------------------------------------------------------------------------------------------- embedding


def embed_scene_texts(
    embedder,
    tokenizer: EmbeddingTokenizer,
    texts: Sequence[str],
    options: SceneTableOptions,
    embedder_onnx: Path | None = None,
) -> tuple[np.ndarray, Throughput]:
    """Embed ``texts`` (already formatted) shortest first; returns ``(N, D) float32`` in input order and the rates.

    ``embedder_onnx``: run that graph on ONNX Runtime (on ``options.device``, as the served embedder runs it)
    instead of the PyTorch ``embedder``, which then only gives the FLOPs count.
    """
    import torch
    from tqdm.auto import tqdm

    device = torch.device(options.device)
    cuda = device.type == "cuda"
    embed = _forward(embedder, options, embedder_onnx)
    out = np.zeros((len(texts), embedder.output_dim), dtype=np.float32)  # (N, D)
    order = np.argsort([len(t) for t in texts], kind="stable")  # characters ~ tokens: neighbours pad alike
    bar = tqdm(total=len(texts), desc="embed scenes", unit="text", disable=not options.progress, dynamic_ncols=True)

    def collect(rows: np.ndarray, vectors) -> None:
        out[rows] = vectors if embedder_onnx is not None else vectors.float().cpu().numpy()  # (B, D); CUDA: waits
        bar.update(len(rows))

    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        if (cuda or options.compile) and len(texts):
            # One untimed forward of the first batch: CUDA's context, cuBLAS handles and kernel selection, and the
            # layers' compilation, cost seconds once, which a table of a few thousand texts would count as embedding.
            collect(order[: options.batch_size], embed(*tokenizer([texts[i] for i in order[: options.batch_size]])))
            bar.reset()
        start = time.perf_counter()
        tokens, flops = _embed_in_order(embed, collect, tokenizer, texts, order, options.batch_size,
                                        text_flops_counter(embedder))
    seconds = time.perf_counter() - start
    bar.close()
    peak = matmul_peak_flops(options.device) if options.measure_peak and len(texts) else None
    return out, Throughput(len(texts), tokens, seconds, flops, peak)


def _forward(embedder, options: SceneTableOptions, embedder_onnx: Path | None):
    """``(input_ids, attention_mask)`` (B, T) int64 each -> (B, D): the served ONNX graph on ONNX Runtime, or the
    PyTorch embedder on the device (compiled when asked; on CUDA the result is queued, not yet computed)."""
    import torch

    if embedder_onnx is not None:
        from larr.export.onnx_export import EMBEDDER_INPUTS, EMBEDDER_OUTPUTS
        from larr.serving.runtime import OnnxRuntime, RuntimeSpec

        graph = OnnxRuntime(Path(embedder_onnx), EMBEDDER_INPUTS, EMBEDDER_OUTPUTS, RuntimeSpec(device=options.device))
        return lambda input_ids, attention_mask: graph.run_numpy([input_ids, attention_mask])
    device = torch.device(options.device)
    embedder = embedder.to(device).eval()
    if options.compile:
        compile_layers(embedder)
    return lambda input_ids, attention_mask: embedder(torch.from_numpy(input_ids).to(device),
                                                      torch.from_numpy(attention_mask).to(device))


def _embed_in_order(embed, collect, tokenizer: EmbeddingTokenizer, texts: Sequence[str], order: np.ndarray,
                    batch_size: int, flops_of) -> tuple[int, float]:
    """Every batch of ``order`` through ``embed``, each tokenised while the device computes the one before (CUDA
    kernels are queued asynchronously; on the H200 a tokenising thread and an event-waited copy back gained nothing
    over this: the GPU is the limit). Returns the real tokens and the model FLOPs embedded."""
    tokens, flops = 0, 0.0
    in_flight = None  # (rows, vectors) of the batch the device is computing
    for first in range(0, len(texts), batch_size):
        rows = order[first : first + batch_size]
        input_ids, attention_mask = tokenizer([texts[i] for i in rows])  # (B, T) int64 each
        lengths = attention_mask.sum(axis=1)  # (B,) real tokens per text
        tokens += int(lengths.sum())
        flops += flops_of(lengths)
        if in_flight is not None:
            collect(*in_flight)
        in_flight = rows, embed(input_ids, attention_mask)
    if in_flight is not None:
        collect(*in_flight)
    return tokens, flops


def write_scene_table(
    embedder_dir: str | Path,
    dataset: Dataset | str | Path,
    out_dir: str | Path,
    embedder_version: str,
    extra_texts: str | Path | None = None,
    options: SceneTableOptions | None = None,
    progress: Callable[[str], None] | None = None,
    embedder_onnx: str | Path | None = None,
) -> SceneTableResult:
    """Embed every scene text of ``dataset`` (+ ``extra_texts``) with the TextEmbedder in ``embedder_dir`` (PyTorch),
    or with the served graph ``embedder_onnx`` (ONNX Runtime: an int8 or fp16 embedder, whose rows must be what the
    served graph returns, not what fp32 PyTorch would). Writes ``out_dir/scene_table.safetensors`` and
    ``out_dir/scene_table.json`` (format: :mod:`larr.serving.stores.table`). ``dataset``: a Dataset or its folder.

    Wiring into ``larr export`` (``write_repository``): after ``export_embedder`` wrote the ONNX, call
    ``write_scene_table(paths.embedder_dir, RunLayout(checkpoints).dataset_dir(), version_dirs[FEATURE_CACHE_MODEL],
    facts.embedder_version)`` (``facts.embedder_version`` is ``onnx_digest(embedder_onnx)``; skip the table when
    ``dataset_dir()`` is None), so the table sits next to the tokenizer in the feature cache's version folder
    under the version the config publishes; ``TableStore.load(version_dir, embedder_version, scene_features,
    tokenizer.max_text_chars)`` then reads it at start.
    """
    import torch

    from larr.export.onnx_export import load_embedder_for_export

    options = options or SceneTableOptions()
    report = progress or (lambda line: None)
    embedder_dir, out_dir = Path(embedder_dir), Path(out_dir)
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset)
    features = tuple(dataset.info.scene_features)
    # Each batch padded to its own longest text, not to the trained multiple: batches are sorted by length, so a
    # multiple of 8 would be most of the padding (11.6-token texts: 70 % of the positions real at 8, 92 % at 1).
    # Padding is masked (right-padded), so the rows are the same; the served CPU embedder pads the same way.
    tokenizer = EmbeddingTokenizer.from_directory(embedder_dir, pad_to_multiple_of=1)
    extra = read_extra_texts(extra_texts, features) if extra_texts is not None else []
    # keys exactly as every store reader builds them: scene_key clips to the tokenizer's reach
    keys = [(key.feature, key.text) for key in distinct_scene_keys(dataset, embedder_version, tokenizer.max_text_chars, extra)]
    report(f"{len(keys)} distinct scene texts over {len(features)} features ({len(extra)} extra lines)")

    # fp32, no KV cache. CPU: eager attention, what the ONNX graph computes. CUDA: SDPA, what the served PyTorch
    # embedder runs (fused kernels on a GPU; the same arithmetic as eager's one small kernel per step); bf16 autocast
    embedder = load_embedder_for_export(embedder_dir, "sdpa" if options.device.startswith("cuda") else "eager")
    formatted = [format_scene_feature(features[k], text) for k, text in keys]  # the feature cache's embedder input
    if keys:
        vectors, throughput = embed_scene_texts(embedder, tokenizer, formatted, options, embedder_onnx)  # (N, D)
    else:
        vectors, throughput = np.zeros((0, embedder.output_dim), np.float32), Throughput(0, 0, 0.0, 0.0, None)
    del embedder
    if options.device.startswith("cuda"):
        torch.cuda.empty_cache()

    save_scene_table(out_dir, keys, vectors, features, tokenizer.max_text_chars, embedder_version, options.dtype,
                     {**throughput.to_json(), "device": options.device})
    report(f"scene table {out_dir}: {len(keys)} rows x {vectors.shape[1]} {options.dtype}, embedder {embedder_version}")
    report(throughput.summary())
    return SceneTableResult(out_dir, embedder_version, len(keys), int(vectors.shape[1]), throughput)


def save_scene_table(
    out_dir: Path,
    keys: Sequence[tuple[int, str]],
    vectors: np.ndarray,
    features: Sequence[str],
    max_text_chars: int,
    embedder_version: str,
    dtype: str,
    precompute: dict,
) -> None:
    """Write ``keys`` (sorted ``(feature, text)``) and their rows ``vectors`` (N, D) in the served table format
    (:mod:`larr.serving.stores.table`); every engine writes through here, so their tables are one format."""
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = np.ascontiguousarray(vectors.astype(dtype))  # (N, D)
    save_file({TABLE_TENSOR: rows}, str(out_dir / SCENE_TABLE_FILE), metadata={"embedder_version": embedder_version})
    index = {
        "format": TABLE_FORMAT,
        "embedder_version": embedder_version,
        "dim": int(vectors.shape[1]),
        "dtype": dtype,
        "rows": len(keys),
        "features": list(features),
        "max_text_chars": max_text_chars,
        "hash": TABLE_HASH,
        # How fast this table was computed (benchmarks report it as the precompute's MFU).
        "precompute": precompute,
        "keys": [[k, text, f"{table_key_hash(k, text):016x}"] for k, text in keys],
    }
    (out_dir / SCENE_TABLE_INDEX_FILE).write_text(json.dumps(index, ensure_ascii=False) + "\n", encoding="utf-8")


def served_embedder_version(embedder_dir: str | Path) -> str:
    """The ``embedder_version`` ``larr export`` publishes for this embedder: the digest of its ONNX export."""
    from larr.export.onnx_export import export_embedder, onnx_digest

    with tempfile.TemporaryDirectory(prefix="larr-embed-scenes-") as scratch:
        return onnx_digest(export_embedder(embedder_dir, Path(scratch) / "model.onnx"))


# --------------------------------------------------------------------------------------------- CLI


def configure_embed_scenes_parser(parser: argparse.ArgumentParser) -> None:
    defaults = SceneTableOptions()
    add = parser.add_argument
    add("--checkpoints", required=True, type=Path, help="run folder of `larr train` (config.yaml names the dataset)")
    add("--out", required=True, type=Path, help="folder for scene_table.safetensors and scene_table.json")
    add("--data", type=Path, help="dataset folder (default: the one the run's config.yaml names)")
    add("--variant", default=Variant.LARR.value, help="whose embedder to use (larr, or the no_stage1 ablation)")
    add("--extra-texts", type=Path, help='JSON lines {"feature": name, "text": ...}, e.g. scene texts from logs')
    add("--device", default=defaults.device, help="cpu (fp32) or cuda[:N] (bf16 autocast)")
    add("--batch-size", type=int, default=defaults.batch_size, help="texts per forward pass")
    add("--dtype", default=defaults.dtype, choices=ROW_DTYPES, help="row type on disk")
    add("--embedder-version", help="the served embedder_version (default: export the embedder to ONNX and digest it)")
    add("--embedder-precision", default=EmbedderPrecision.FP32.value, choices=[p.value for p in EmbedderPrecision],
        help="the served embedder graph's (larr export --embedder-precision); not fp32: the table is embedded by that graph")
    add("--no-peak", action="store_true", help="skip the matmul that measures the MFU denominator")
    add("--compile", action="store_true", help=next(f.metadata["help"] for f in fields(SceneTableOptions) if f.name == "compile"))
    add("--engine", default=SceneTableEngine.LOCAL.value, choices=[e.value for e in SceneTableEngine],
        help="local: this process; ray: a Ray Data pipeline on a Ray cluster (pip install -e '.[ray]'; larr.export.ray_engine)")


def run_embed_scenes(args: argparse.Namespace, build: Callable[..., SceneTableResult] | None = None) -> int:
    """Run ``larr embed-scenes``; returns the exit code (2 with a message on stderr for a clear user error).

    ``build``: the table builder, :func:`write_scene_table`'s signature (the Ray engine passes its own)."""
    build = build or write_scene_table
    try:
        options = SceneTableOptions(
            batch_size=args.batch_size, device=args.device, dtype=args.dtype, measure_peak=not args.no_peak,
            compile=args.compile,
        )
        layout = RunLayout(args.checkpoints)
        embedder_dir = layout.embedder_dir(Variant.parse(args.variant), layout.ctr_embedder_source())
        data = args.data or layout.dataset_dir()
        if not (embedder_dir / "embedder.json").exists():
            raise SceneTableError(f"{embedder_dir}: no trained embedder; run `larr train embed --out {args.checkpoints}`")
        if data is None:
            raise SceneTableError(f"{layout.config_file}: names no dataset that exists here; pass --data")
        precision = EmbedderPrecision.parse(args.embedder_precision)
        with tempfile.TemporaryDirectory(prefix="larr-embed-scenes-") as scratch:
            graph = None
            if precision is EmbedderPrecision.FP32:
                version = args.embedder_version or served_embedder_version(embedder_dir)
            else:  # the served graph embeds the table, and its digest is the version
                from larr.export.embedder_precision import export_embedder_at
                from larr.export.onnx_export import onnx_digest

                graph = export_embedder_at(embedder_dir, Path(scratch) / "model.onnx", precision)
                version = args.embedder_version or onnx_digest(graph)
            build(
                embedder_dir, data, args.out, version, extra_texts=args.extra_texts, options=options,
                progress=lambda line: print(line, flush=True), embedder_onnx=graph,
            )
    except (ValueError, FileNotFoundError) as error:  # SceneTableError, DataValidationError, bad flags
        print(f"larr embed-scenes: {error}", file=sys.stderr)
        return 2
    return 0
