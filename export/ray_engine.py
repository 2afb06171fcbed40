"""The scene table built on Ray Data (``larr embed-scenes --engine ray``): texts from logs, many workers.

    pip install -e ".[ray]"
    ray start --head --port 6379                       # one head host
    ray start --address HEAD:6379                      # each worker host (a GPU host: one embedding actor per GPU)
    larr embed-scenes --engine ray --address HEAD:6379 --checkpoints runs/tiny --out DIR \\
        --extra-texts logs/scenes/ --device cuda --ray-actors 8 --batch-size 4096

The same table as ``--engine local`` (:mod:`larr.export.scene_table`) for the same texts, written by the
same function, but computed as a Ray Data pipeline instead of in one process::

    read      the run's dataset (its distinct texts, on the driver) + --extra-texts: JSON lines or Parquet
              (a file or a folder of shards; columns "feature" (a scene feature name) and "text"), Ray's readers
    key       CPU tasks: an unknown feature or an empty text is an error; texts clipped to max_text_chars (scene_key)
    resume    keys that a shard of an earlier, failed run already holds are dropped
    dedup     hash shuffle on the key digest (groupby): each distinct key once, whatever the number of log lines
    tokenise  CPU tasks: EmbeddingTokenizer, exactly as the feature cache tokenises
    embed     an actor pool (map_batches): the TextEmbedder is loaded once per actor (one GPU each with --device
              cuda: bf16 autocast; fp32 on CPU), embeds a batch and writes it as one Parquet shard
    assemble  the driver: every shard, in key order -> scene_table.safetensors + scene_table.json

The key digest is the Redis tier's (``feature:xxh3-128(text)``, the tail of ``RedisStore.redis_key``), so a
key is one row here, one entry in Redis and one row of the table.

Failures. Ray retries a task and restarts an actor that died with its worker (Ray Data's defaults for
``map_batches``); the batch that actor held is embedded again, on a live worker. A shard is written to a
temporary name and renamed, so it is whole or absent. If the whole job dies (the driver, the head), rerunning
the same command resumes: what the shards hold is not embedded again. The shards (``--shards``, default
``OUT/shards``) are the sharded form of the table, with an index (``_manifest.json``: embedder version,
features, dim); ``larr load-store`` reads them as it reads a table. They must be on storage every worker
writes to (one host, NFS, or a mounted bucket).

``ray`` is imported here only: the local engine never needs it (an import-linter contract).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import xxhash

from larr.data.schema import Dataset, load_dataset
from larr.export.scene_table import SceneTableError, SceneTableOptions, SceneTableResult, Throughput, save_scene_table
from larr.serving.stores.protocol import scene_key
from larr.serving.stores.redis import text_digest
from larr.tokenization import EmbeddingTokenizer

SHARD_MANIFEST = "_manifest.json"  # a leading underscore: Parquet readers skip it when they list the shards
SHARD_FORMAT = 1


@dataclass(frozen=True)
class RayEngineOptions:
    """Where the Ray job runs and how wide; every field is a CLI flag."""

    address: str | None = field(default=None, metadata={
        "help": "Ray cluster to join (HOST:PORT, or auto); default: RAY_ADDRESS, else a Ray started in this process"})
    actors: int = field(default=2, metadata={"help": "embedding actors (with --device cuda: one GPU each)"})
    actor_cpus: float = field(default=1.0, metadata={"help": "CPUs one embedding actor reserves"})
    tokenize_batch_size: int = field(default=4096, metadata={"help": "texts per tokenising task batch"})
    shards: Path | None = field(default=None, metadata={"help": "folder of the Parquet shards (default: OUT/shards)"})

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if not self.actor_cpus > 0:
            raise ValueError(f"actor_cpus must be > 0, got {self.actor_cpus}")
        if self.tokenize_batch_size < 1:
            raise ValueError(f"tokenize_batch_size must be >= 1, got {self.tokenize_batch_size}")


def key_digest(feature: int, text: str) -> str:
    """The store's key digest of one (clipped) key: ``feature:digest(text)``, as ``RedisStore.redis_key`` ends."""
    return f"{feature}:{text_digest(text.encode('utf-8'))}"


# --------------------------------------------------------------------------------------------- stages (on workers)


def key_batch(batch: dict, features: tuple[str, ...], max_text_chars: int):
    """``{"feature": names, "text"}`` -> ``{"feature": int32 index, "text": clipped, "digest"}``; raises on bad rows."""
    index = {name: k for k, name in enumerate(features)}
    out_features, out_texts = [], []
    for name, text in zip(batch["feature"], batch["text"]):
        if name not in index:
            raise SceneTableError(f"extra texts: unknown scene feature {name!r}; known: {list(features)}")
        if not isinstance(text, str) or not text.strip():  # the feature cache rejects empty texts: no key asks for one
            raise SceneTableError(f"extra texts: empty or missing text for {name}")
        key = scene_key("", index[name], text, max_text_chars)
        out_features.append(key.feature)
        out_texts.append(key.text)
    import pyarrow as pa

    digests = [key_digest(k, text) for k, text in zip(out_features, out_texts)]
    # Arrow out, whatever came in: the shuffle after this concatenates blocks, and refuses pandas beside Arrow
    return pa.table({"feature": pa.array(out_features, pa.int32()), "text": pa.array(out_texts, pa.string()),
                     "digest": pa.array(digests, pa.string())})


def first_of_group(group: dict) -> dict:
    """One row of a group of equal digests (dedup)."""
    return {name: column[:1] for name, column in group.items()}


@functools.lru_cache(maxsize=4)
def _tokenizer(embedder_dir: str) -> EmbeddingTokenizer:
    """One tokenizer per worker process and embedder (tasks reuse their process)."""
    return EmbeddingTokenizer.from_directory(embedder_dir, pad_to_multiple_of=1)


def tokenize_batch(batch: dict, embedder_dir: str, features: tuple[str, ...]) -> dict:
    """Adds ``ids`` (B, max_length) int32, right-padded, and ``length`` (B,): what the actor feeds the embedder."""
    from larr.text import format_scene_feature

    tokenizer = _tokenizer(embedder_dir)
    rows = tokenizer.token_ids([format_scene_feature(features[k], text) for k, text in zip(batch["feature"], batch["text"])])
    ids = np.full((len(rows), tokenizer.config.max_length), tokenizer.pad_id, dtype=np.int32)  # (B, L)
    for row, token_ids in enumerate(rows):
        ids[row, : len(token_ids)] = token_ids
    return {**batch, "ids": ids, "length": np.asarray([len(r) for r in rows], dtype=np.int32)}


class EmbedShardWriter:
    """Embedding actor: loads the TextEmbedder once, embeds each batch and writes it as one Parquet shard."""

    def __init__(self, embedder_dir: str, device: str, shards: str):
        import torch

        from larr.export.onnx_export import load_embedder_for_export

        self.device = torch.device(device)
        # as the local engine: eager attention on CPU (what the ONNX graph computes), SDPA + bf16 autocast on CUDA
        self.embedder = load_embedder_for_export(embedder_dir, "sdpa" if self.device.type == "cuda" else "eager")
        self.embedder = self.embedder.to(self.device).eval()
        self.shards = Path(shards)

    def __call__(self, batch: dict) -> dict:
        import torch

        lengths = np.asarray(batch["length"], dtype=np.int64)  # (B,)
        width = int(lengths.max())
        input_ids = torch.from_numpy(np.asarray(batch["ids"], dtype=np.int64)[:, :width].copy())  # (B, T)
        attention_mask = torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64))  # (B, T)
        cuda = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cuda):
            vectors = self.embedder(input_ids.to(self.device), attention_mask.to(self.device)).float().cpu().numpy()
        name = write_shard(self.shards, batch["feature"], batch["text"], batch["digest"], vectors)  # (B, D)
        return {"shard": np.asarray([name], dtype=object), "rows": np.asarray([len(lengths)]),
                "tokens": np.asarray([int(lengths.sum())])}


def write_shard(shards: Path, feature, text, digest, vectors: np.ndarray) -> str:
    """One Parquet shard of keys and rows (B, D), named by its keys; written whole (temp file + rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    digests = [str(d) for d in digest]
    name = f"part-{xxhash.xxh3_64_hexdigest(chr(0).join(digests).encode('utf-8'))}.parquet"
    dim = vectors.shape[1]
    table = pa.table({
        "feature": pa.array(np.asarray(feature, dtype=np.int32)),
        "text": pa.array([str(t) for t in text], type=pa.string()),
        "digest": pa.array(digests, type=pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).ravel()), dim),
    })
    temporary = shards / f".{name}.{os.getpid()}.tmp"  # a leading dot: readers listing the folder skip it
    pq.write_table(table, temporary)
    os.replace(temporary, shards / name)
    return name


# --------------------------------------------------------------------------------------------- the driver


def dataset_texts(dataset: Dataset):
    """The run's distinct ``(feature name, text)`` of every split, as an Arrow table (a small set next to logs)."""
    import pyarrow as pa

    features = dataset.info.scene_features
    pairs = sorted({(features[k], text) for split in dataset.splits.values() for k, column in enumerate(split.scene)
                    for text in set(column)})
    return pa.table({"feature": [name for name, _ in pairs], "text": [text for _, text in pairs]}, schema=pa.schema(
        [("feature", pa.string()), ("text", pa.string())]))


def read_extra_texts_ray(path: Path):
    """``--extra-texts`` as a Ray dataset of ``feature``/``text``: Parquet (a ``.parquet`` file or a folder holding
    them) or JSON lines (any other file or folder)."""
    import ray.data

    parquet = path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet")))
    ds = ray.data.read_parquet(str(path)) if parquet else ray.data.read_json(str(path), lines=True)
    return ds.select_columns(["feature", "text"])


def open_shards(shards: Path, manifest: dict) -> set[str]:
    """Create ``shards`` or check that its shards are of this table; returns the digests they already hold."""
    import pyarrow.parquet as pq

    shards.mkdir(parents=True, exist_ok=True)
    path = shards / SHARD_MANIFEST
    if path.exists():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != manifest:
            raise SceneTableError(f"{shards}: shards of another table ({found}); remove the folder or pass another --shards")
    else:
        path.write_text(json.dumps(manifest) + "\n", encoding="utf-8")
    done: set[str] = set()
    for part in sorted(shards.glob("part-*.parquet")):
        done.update(pq.read_table(part, columns=["digest"]).column("digest").to_pylist())
    return done


def distinct_keys(dataset: Dataset, extra_texts: Path | None, features: tuple[str, ...], max_text_chars: int,
                  batch_size: int, partitions: int):
    """The distinct keys (``feature``, ``text``, ``digest``) of the run's texts and the extra texts, materialised;
    ``partitions``: of the hash shuffle (Ray's default, 200, costs minutes of task overhead on a small table)."""
    import ray.data

    def keyed_of(texts):
        return texts.map_batches(key_batch, batch_size=batch_size, batch_format="numpy",
                                 fn_kwargs={"features": features, "max_text_chars": max_text_chars})

    # each source keyed on its own, then the union: a batch must not mix the readers' block types
    keyed = keyed_of(ray.data.from_arrow(dataset_texts(dataset)))
    if extra_texts is not None:
        keyed = keyed.union(keyed_of(read_extra_texts_ray(extra_texts)))
    return keyed.groupby("digest", num_partitions=partitions).map_groups(first_of_group, batch_format="numpy").materialize()


def embed_into_shards(keys, todo_rows: int, done: set[str], embedder_dir: Path, features: tuple[str, ...],
                      shards: Path, options: SceneTableOptions, engine: RayEngineOptions) -> list[dict]:
    """Tokenise (CPU tasks) and embed (the actor pool) every key not in ``done``; one manifest row per shard."""
    import ray.data

    todo = keys.filter(lambda row: row["digest"] not in done) if done else keys
    # a block is what one actor call gets: one block per batch spreads the batches over the actors, and a lost
    # actor costs one batch, not the table
    todo = todo.repartition(max(1, -(-todo_rows // options.batch_size)))
    tokens = todo.map_batches(tokenize_batch, batch_size=engine.tokenize_batch_size, batch_format="numpy",
                              fn_kwargs={"embedder_dir": str(embedder_dir), "features": features})
    gpu = options.device.startswith("cuda")
    written = tokens.map_batches(
        EmbedShardWriter, batch_size=options.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=engine.actors), num_cpus=engine.actor_cpus, num_gpus=1 if gpu else 0,
        fn_constructor_kwargs={"embedder_dir": str(embedder_dir), "device": "cuda" if gpu else "cpu",
                               "shards": str(shards)},
        # actors on as many workers as there are: one lost worker takes one actor, not all of them
        ray_remote_args_fn=lambda: {"scheduling_strategy": "SPREAD"},
    )
    return written.take_all()


def assemble_shards(shards: Path, wanted: set[str], dim: int) -> tuple[list[tuple[int, str]], np.ndarray]:
    """The shards' rows for the ``wanted`` digests, one per digest, in key order: ``(keys, (N, D) float32)``."""
    import pyarrow.parquet as pq

    keys: list[tuple[int, str]] = []
    blocks: list[np.ndarray] = []
    seen: set[str] = set()
    for part in sorted(shards.glob("part-*.parquet")):
        table = pq.read_table(part)
        vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)  # (B, D)
        take = []
        for row, (feature, text, digest) in enumerate(zip(*(table.column(c).to_pylist() for c in ("feature", "text", "digest")))):
            if digest in wanted and digest not in seen:  # a batch embedded twice (a retried actor) counts once
                seen.add(digest)
                keys.append((feature, text))
                take.append(row)
        blocks.append(vectors[take])
    if missing := len(wanted) - len(seen):
        raise SceneTableError(f"{shards}: {missing} of {len(wanted)} keys have no row after the build")
    order = sorted(range(len(keys)), key=keys.__getitem__)  # the local engine's order: sorted (feature, text)
    rows = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
    return [keys[i] for i in order], rows[order]


def check_cluster(resources: dict, options: SceneTableOptions, engine: RayEngineOptions) -> float:
    """The cluster's CPUs; raises unless the actors leave a CPU for the tokenising tasks (else they wait forever)."""
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if cpus < engine.actors * engine.actor_cpus + 1:
        raise SceneTableError(f"the Ray cluster has {cpus:g} CPUs: {engine.actors} actors x {engine.actor_cpus:g} CPUs "
                              "plus one for tokenising do not fit; pass fewer --ray-actors or a smaller --ray-actor-cpus")
    if options.device.startswith("cuda") and gpus < engine.actors:
        raise SceneTableError(f"the Ray cluster has {gpus:g} GPUs for {engine.actors} GPU actors; pass --ray-actors {int(gpus)}")
    return cpus


def write_scene_table_ray(
    embedder_dir: str | Path,
    dataset: Dataset | str | Path,
    out_dir: str | Path,
    embedder_version: str,
    extra_texts: str | Path | None = None,
    options: SceneTableOptions | None = None,
    progress: Callable[[str], None] | None = None,
    embedder_onnx: str | Path | None = None,
    engine: RayEngineOptions | None = None,
) -> SceneTableResult:
    """:func:`larr.export.scene_table.write_scene_table` on a Ray cluster (module docstring); same arguments and
    table, plus ``engine``. Joins the cluster at ``engine.address`` and leaves it at the end."""
    import ray

    if embedder_onnx is not None:
        raise SceneTableError("--engine ray embeds with the PyTorch embedder (fp32); an int8/fp16 graph's table needs "
                              "--engine local")
    options, engine = options or SceneTableOptions(), engine or RayEngineOptions()
    report = progress or (lambda line: None)
    embedder_dir, out_dir = Path(embedder_dir), Path(out_dir)
    dataset = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    features = tuple(dataset.info.scene_features)
    max_text_chars = EmbeddingTokenizer.from_directory(embedder_dir).max_text_chars
    meta = json.loads((embedder_dir / "embedder.json").read_text(encoding="utf-8"))  # TextEmbedder.save_pretrained's
    dim = int(meta["projection_dim"] or meta["hidden_size"])  # TextEmbedder.output_dim, without torch on the driver
    shards = engine.shards or out_dir / "shards"
    manifest = {"format": SHARD_FORMAT, "embedder_version": embedder_version, "features": list(features), "dim": dim,
                "max_text_chars": max_text_chars}
    done = open_shards(shards, manifest)
    ray.init(address=engine.address, log_to_driver=False, logging_level="WARNING")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = options.progress
        cpus = check_cluster(ray.cluster_resources(), options, engine)
        keys = distinct_keys(dataset, Path(extra_texts) if extra_texts else None, features, max_text_chars,
                             engine.tokenize_batch_size, partitions=max(1, int(cpus)))
        wanted = {d for batch in keys.iter_batches(batch_format="numpy", batch_size=65536) for d in batch["digest"]}
        report(f"{len(wanted)} distinct scene texts over {len(features)} features; {len(wanted & done)} already in "
               f"shards ({shards})")
        start = time.perf_counter()
        todo_rows = len(wanted - done)
        written = embed_into_shards(keys, todo_rows, done, embedder_dir, features, shards, options, engine) if todo_rows else []
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    throughput = Throughput(sum(int(w["rows"]) for w in written), sum(int(w["tokens"]) for w in written), seconds, 0.0, None)
    ordered, vectors = assemble_shards(shards, wanted, dim)
    precompute = {**throughput.to_json(), "device": options.device, "engine": "ray", "actors": engine.actors}
    save_scene_table(out_dir, ordered, vectors, features, max_text_chars, embedder_version, options.dtype, precompute)
    report(f"scene table {out_dir}: {len(ordered)} rows x {dim} {options.dtype}, embedder {embedder_version} "
           f"({len(written)} shards written now)")
    report(f"{throughput.summary()} (the whole pipeline: tokenising and actor start included)")
    return SceneTableResult(out_dir, embedder_version, len(ordered), dim, throughput)


_FLAGS = {"address": "--address", "actors": "--ray-actors", "actor_cpus": "--ray-actor-cpus",
          "tokenize_batch_size": "--ray-tokenize-batch-size", "shards": "--shards"}


def configure_ray_engine_parser(parser: argparse.ArgumentParser) -> None:
    """The ``--engine ray`` flags of ``larr embed-scenes``, one per :class:`RayEngineOptions` field (no ray import)."""
    group = parser.add_argument_group("--engine ray")
    defaults = RayEngineOptions()
    for option in fields(RayEngineOptions):
        default = getattr(defaults, option.name)
        kind = {"shards": Path, "address": str}.get(option.name, type(default))
        group.add_argument(_FLAGS[option.name], dest=f"ray_{option.name}", type=kind, default=default,
                           help=option.metadata["help"])


def ray_engine_options(args: argparse.Namespace) -> RayEngineOptions:
    return RayEngineOptions(**{option.name: getattr(args, f"ray_{option.name}") for option in fields(RayEngineOptions)})


def run_embed_scenes_ray(args: argparse.Namespace) -> int:
    """``larr embed-scenes --engine ray``: the local command's checks and version, this module's builder."""
    from larr.export.scene_table import run_embed_scenes

    try:
        engine = ray_engine_options(args)
    except ValueError as error:
        print(f"larr embed-scenes: {error}", flush=True)
        return 2
    return run_embed_scenes(args, build=functools.partial(write_scene_table_ray, engine=engine))
