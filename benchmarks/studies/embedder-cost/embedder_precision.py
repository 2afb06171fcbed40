"""fp32 vs int8 (vs fused fp32) embedder graphs: parity on held-out texts and tokens/s, measured interleaved.

    python benchmarks/studies/embedder-cost/embedder_precision.py --embedder-dir runs/bench/smollm-135m/run/embed/model \\
        --data runs/demo/data --out benchmarks/studies/embedder-cost/results/smollm-135m.json \\
        --fp32-onnx runs/bench/smollm-135m/repos/larr/embedder/1/model.onnx

Parity, on the distinct formatted scene texts of the dataset's **test** split (every graph embeds the same
batches of ``--batch`` texts in the same shuffled order, on ONNX Runtime's CPU provider):

* cosine of each text's embedding to the fp32 graph's: mean, 1st percentile, minimum;
* ``neighbour_recall@10``: for each test text never seen in train (the query), the share of its 10 nearest
  texts (cosine, itself excluded) under fp32 that the candidate's 10 nearest keep (1.0 = same neighbours);
* ``pair_recall@10`` (``--pairs N``, the stage-2 evaluation of larr.training.embed.recall_at_k): share of
  N held-out test pairs per kind (user-user, item-item, user-item) whose right side ranks in the top 10 of
  the right sides of its group of ``--pair-group`` pairs (100: as the earlier 100-pair runs) for its left,
  per graph; the bound is on |candidate - fp32|, reported as the paired difference over the same pairs with
  its 95 % interval (``pair_recall@10_minus_fp32``).

Throughput: tokens/s (real tokens, ``<emb>`` included, padding excluded, as larr.benchmarks counts them)
of batches of ``--batch`` test texts. Each repeat runs every graph for ``--calls`` batches, the graphs in a
new shuffled order per repeat, after one untimed warm-up call each; sessions as the served embedder opens
them (larr.serving.runtime.OnnxRuntime: all cores, no spinning). Ratios are paired per repeat, so load
from other processes that changes between repeats moves both sides of a ratio together.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from larr.benchmarks.machine import detect_machine
from larr.data.schema import Dataset, load_dataset
from larr.export.embedder_precision import (
    INT8_FP32_MATMULS,
    MIN_MEAN_COSINE,
    fuse_transformer_ops,
    quantize_int8,
)
from larr.export.onnx_export import EMBEDDER_INPUTS, EMBEDDER_OUTPUTS, export_embedder, onnx_files
from larr.serving.runtime import OnnxRuntime, RuntimeSpec
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer

FP32, INT8, INT8_ALL, FUSED = "fp32", "int8", "int8_all_weight_matmuls", "fp32_fused"
RECALL_K = 10
RECALL_TOLERANCE = 0.01  # issue 13: recall@10 within 0.01 of fp32


@dataclass(frozen=True)
class Graph:
    name: str
    path: Path
    what: str


def build_graphs(embedder_dir: Path, fp32_onnx: Path | None, scratch: Path, fused: bool) -> list[Graph]:
    """The fp32 graph (given, or exported here) and the graphs derived from it."""
    if fp32_onnx is None:
        fp32_onnx = export_embedder(embedder_dir, scratch / "fp32.onnx")
    graphs = [Graph(FP32, fp32_onnx, "torch.onnx.export, parity-checked against PyTorch")]
    graphs.append(Graph(INT8, quantize_int8(fp32_onnx, scratch / "int8.onnx"),
                        f"larr export --embedder-precision int8: weight MatMuls but {list(INT8_FP32_MATMULS)}"))
    graphs.append(Graph(INT8_ALL, quantize_int8(fp32_onnx, scratch / "int8_all.onnx", exclude=()),
                        "ablation: every weight MatMul int8 (down_proj too)"))
    if fused:
        config = json.loads((embedder_dir / "encoder" / "config.json").read_text(encoding="utf-8"))
        graphs.append(Graph(FUSED, fuse_transformer_ops(fp32_onnx, scratch / "fused.onnx",
                                                        config["num_attention_heads"], config["hidden_size"]),
                            "ONNX Runtime transformer optimiser fusions, fp32"))
    return graphs


def held_out_texts(dataset: Dataset, seed: int) -> tuple[list[str], np.ndarray]:
    """Distinct formatted test-split scene texts, shuffled; and a mask of those never seen in train."""
    features = dataset.info.scene_features

    def formatted(split: str) -> set[str]:
        return {format_scene_feature(features[k], text) for k, column in enumerate(dataset.splits[split].scene)
                for text in column}

    texts = sorted(formatted("test"))
    np.random.default_rng(seed).shuffle(texts)
    train = formatted("train")
    return texts, np.array([text not in train for text in texts])


def embed(runtime: OnnxRuntime, tokenizer: EmbeddingTokenizer, texts: list[str], batch: int) -> np.ndarray:
    """``(N, D)`` embeddings, in batches of ``batch`` consecutive texts."""
    return np.concatenate([runtime.run_numpy(list(tokenizer(texts[s : s + batch]))) for s in range(0, len(texts), batch)])


def top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(Q, k)`` of each query row's k most similar rows of ``vectors`` (cosine; the query itself excluded)."""
    scores = vectors[queries] @ vectors.T  # (Q, N), unit vectors
    scores[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-scores, axis=1)[:, :k]


def neighbour_recall(reference: np.ndarray, candidate: np.ndarray, queries: np.ndarray, k: int = RECALL_K) -> float:
    """Mean share of the reference's top-k neighbours that the candidate's top-k keeps."""
    ref, cand = top_k(reference, queries, k), top_k(candidate, queries, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref, cand)]))


def pair_hits(runtime: OnnxRuntime, tokenizer: EmbeddingTokenizer, pairs: dict, batch: int, group: int) -> dict[str, np.ndarray]:
    """Per pair kind, ``(M,)`` booleans: does the pair's right side rank in the top 10 of the right sides of
    its group of ``group`` consecutive pairs, for its left (larr.training.embed.recall_at_k's definition,
    applied per group: recall@10 among ``group`` candidates stays the same metric however many pairs are
    drawn, and more groups only make its estimate tighter)."""
    out = {}
    for kind, kind_pairs in pairs.items():
        left = embed(runtime, tokenizer, kind_pairs.left, batch)  # (M, D)
        right = embed(runtime, tokenizer, kind_pairs.right, batch)  # (M, D)
        hits = []
        for first in range(0, len(left) - group + 1, group):  # a last partial group is dropped
            scores = left[first : first + group] @ right[first : first + group].T  # (G, G)
            rank = (scores > np.diag(scores)[:, None]).sum(axis=1)  # 0 = best
            hits.append(rank < RECALL_K)
        out[kind] = np.concatenate(hits)
    return out


def paired_difference(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Mean of candidate - reference over the same pairs, with the half-width of its 95 % normal interval."""
    diff = candidate.astype(np.float64) - reference.astype(np.float64)  # (M,) in {-1, 0, 1}
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return {"mean": float(diff.mean()), "ci95": float(half), "pairs": len(diff),
            "gained": int((diff > 0).sum()), "lost": int((diff < 0).sum())}


def interleaved_tokens_per_s(
    runtimes: dict[str, OnnxRuntime], batches: list[tuple[np.ndarray, np.ndarray]], repeats: int, calls: int, seed: int,
) -> dict[str, list[float]]:
    """tokens/s per graph per repeat; each repeat visits the graphs in a new random order."""
    rng = np.random.default_rng(seed)
    for runtime in runtimes.values():
        runtime.run(list(batches[0]))  # warm-up: allocations, thread pools
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    names = list(runtimes)
    for repeat in range(repeats):
        for name in rng.permutation(names):
            tokens, start = 0, time.perf_counter()
            for call in range(calls):
                input_ids, attention_mask = batches[(repeat * calls + call) % len(batches)]  # (B, T) each
                runtimes[name].run([input_ids, attention_mask])
                tokens += int(attention_mask.sum())
            rates[name].append(tokens / (time.perf_counter() - start))
        print(f"repeat {repeat + 1}/{repeats}: " + ", ".join(f"{n} {rates[n][-1]:,.0f}" for n in names), flush=True)
    return rates


def stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "min": float(array.min()), "max": float(array.max()), "n": len(array)}


def run(args: argparse.Namespace) -> dict:
    embedder_dir = Path(args.embedder_dir)
    dataset = load_dataset(args.data)
    tokenizer = EmbeddingTokenizer.from_directory(embedder_dir)
    texts, unseen = held_out_texts(dataset, args.seed)
    texts, unseen = texts[: args.parity_texts], unseen[: args.parity_texts]
    queries = np.flatnonzero(unseen)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="larr-precision-") as scratch:
        graphs = build_graphs(embedder_dir, args.fp32_onnx, Path(scratch), fused=not args.no_fused)
        runtimes = {g.name: OnnxRuntime(g.path, EMBEDDER_INPUTS, EMBEDDER_OUTPUTS, RuntimeSpec()) for g in graphs}
        vectors = {name: embed(runtime, tokenizer, texts, args.batch) for name, runtime in runtimes.items()}
        parity = {}
        for name, v in vectors.items():
            cosine = (v * vectors[FP32]).sum(axis=1)  # (N,), unit vectors
            parity[name] = {
                "cosine_mean": float(cosine.mean()), "cosine_p1": float(np.percentile(cosine, 1)),
                "cosine_min": float(cosine.min()),
                f"neighbour_recall@{RECALL_K}": neighbour_recall(vectors[FP32], v, queries),
            }
        if args.pairs:
            from larr.training.pairs import build_pairs

            pairs = build_pairs(dataset, "test", args.pairs, args.seed, args.history_length, scene_keep=1.0)
            hits = {name: pair_hits(runtimes[name], tokenizer, pairs, args.batch, args.pair_group) for name in (FP32, INT8)}
            for name, by_kind in hits.items():
                parity[name][f"pair_recall@{RECALL_K}"] = {kind: float(h.mean()) for kind, h in by_kind.items()}
            parity[INT8][f"pair_recall@{RECALL_K}_minus_fp32"] = {
                kind: paired_difference(hits[INT8][kind], hits[FP32][kind]) for kind in hits[FP32]
            }
        batches = [tokenizer(texts[s : s + args.batch]) for s in range(0, len(texts) - args.batch + 1, args.batch)]
        rates = interleaved_tokens_per_s(runtimes, batches, args.repeats, args.calls, args.seed)
        sizes = {g.name: sum(path.stat().st_size for path in onnx_files(g.path)) for g in graphs}
    machine = detect_machine("cpu")
    int8_ratios = [a / b for a, b in zip(rates[INT8], rates[FP32])]
    result = {
        "machine": machine.to_json(),
        "shared_machine_load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "embedder_dir": str(embedder_dir),
        "graphs": {g.name: {"what": g.what, "bytes": sizes[g.name]} for g in graphs},
        "texts": {"parity": len(texts), "neighbour_queries_unseen_in_train": int(len(queries)),
                  "pairs_per_kind": args.pairs, "pair_group": args.pair_group, "mean_tokens_per_text": float(np.mean([m.sum() / len(m) for _, m in batches]))},
        "batch": args.batch, "repeats": args.repeats, "calls_per_repeat": args.calls,
        "parity": parity,
        "tokens_per_s": {name: {**stats(values), "per_repeat": values} for name, values in rates.items()},
        "ratio_vs_fp32": {name: stats([a / b for a, b in zip(values, rates[FP32])]) for name, values in rates.items()
                          if name != FP32},
        "embedder_tokens_per_s_fp32": float(np.mean(rates[FP32])),
        "embedder_tokens_per_s_int8": float(np.mean(rates[INT8])),
        "int8_speedup": stats(int8_ratios),
        "bounds": {"cosine_mean_min": MIN_MEAN_COSINE, "recall_at_10_tolerance": RECALL_TOLERANCE},
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/studies/embedder-cost/embedder_precision.py", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--embedder-dir", required=True, type=Path, help="TextEmbedder folder")
    add("--data", required=True, type=Path, help="dataset folder (its test split's scene texts are the held-out texts)")
    add("--out", required=True, type=Path, help="result JSON")
    add("--fp32-onnx", type=Path, help="the embedder's fp32 graph, when already exported (default: export it)")
    add("--batch", type=int, default=64, help="texts per call")
    add("--parity-texts", type=int, default=1024, help="held-out texts embedded by every graph")
    add("--pairs", type=int, default=0, help="held-out pairs per kind for the stage-2 recall@10 (0: skip)")
    add("--pair-group", type=int, default=100, help="pairs ranked together (recall@10 among this many right sides)")
    add("--history-length", type=int, default=6, help="clicked items per user-history text (training.embed's default)")
    add("--repeats", type=int, default=5, help="timed repeats (each runs every graph)")
    add("--calls", type=int, default=3, help="calls per graph per repeat")
    add("--no-fused", action="store_true", help="skip the fused fp32 graph (its optimiser takes minutes at 135M)")
    add("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("parity", "int8_speedup", "embedder_tokens_per_s_fp32",
                                             "embedder_tokens_per_s_int8")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
