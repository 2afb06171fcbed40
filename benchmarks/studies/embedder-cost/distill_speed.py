"""Teacher vs distilled embedder: tokens/s of the PyTorch embedding forward on CPU, measured interleaved.

    python benchmarks/studies/embedder-cost/distill_speed.py --run runs/quick --out speed.json                  # trained pair
    python benchmarks/studies/embedder-cost/distill_speed.py --run runs/quick --shape smollm-135m --out wide.json   # a wider shape

``--shape trained`` (default) times ``RUN/embed/model`` (the teacher) against ``RUN/distill/model`` (``larr train
distill``). A named shape of larr.benchmarks.config (e.g. ``smollm-135m``) times a random-weight teacher of that shape
against it pruned in one shot (magnitude) to ``--width-ratio`` by training/prune.py: the same widths a distillation
ends at, and speed does not depend on the weights' values. The tiny trained model may be too small for its FLOPs to
dominate (per-op overhead); the wider shape shows what the narrower widths buy when they do.

Inputs: batches of ``--batch`` distinct formatted test-split scene texts (what a cache miss embeds), tokenised with
the run's tokenizer. Each repeat runs both models for ``--calls`` batches, in a new random order per repeat, after
one untimed warm-up call each, under ``torch.no_grad``. tokens/s counts real tokens (``<emb>`` included, padding
excluded). The speed-up is the ratio paired per repeat (load from other processes that changes between repeats moves
both sides together); reported as mean and 95 % t-interval over repeats.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from embedder_precision import held_out_texts

from larr.benchmarks.config import LLM_SHAPES
from larr.benchmarks.machine import detect_machine
from larr.benchmarks.summary import mean_ci95
from larr.data.schema import load_dataset
from larr.export.onnx_export import embedder_vocab_size
from larr.layout import RunLayout
from larr.models.embedder import TextEmbedder
from larr.tokenization import EmbeddingTokenizer

TRAINED = "trained"
RANDOM_SHAPES = tuple(name for name, shape in LLM_SHAPES.items() if not shape.trained)


def interval(values: list[float]) -> dict[str, float]:
    """Mean and the 95 % t-interval of the mean over repeats (the serving benchmark's :func:`mean_ci95`)."""
    mean, half = mean_ci95(values)
    half = half or 0.0  # one repeat: no interval
    return {"mean": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)],
            "median": round(float(np.median(values)), 4), "n": len(values)}


def build_models(run: Path, shape_name: str, width_ratio: float, seed: int) -> dict[str, TextEmbedder]:
    layout = RunLayout(run)
    if shape_name == TRAINED:
        return {"teacher": TextEmbedder.from_pretrained(layout.embedder_dir()),
                "student": TextEmbedder.from_pretrained(layout.distilled_embedder_dir)}
    from transformers import AutoModel, LlamaConfig, Qwen2Config

    from larr.training.prune import prune_in_one_shot

    shape = LLM_SHAPES[shape_name]
    # the run's vocabulary: its token ids must index the table, and a table's size does not change a gather's cost
    kwargs = {**shape.config_kwargs(), "vocab_size": embedder_vocab_size(layout.embedder_dir())}
    config = (Qwen2Config if shape.architecture == "qwen2" else LlamaConfig)(**kwargs)
    torch.manual_seed(seed)
    teacher = TextEmbedder(AutoModel.from_config(config), projection_dim=shape.projection_dim).eval()
    return {"teacher": teacher, "student": prune_in_one_shot(teacher, width_ratio).eval()}


@torch.no_grad()
def interleaved_tokens_per_s(models: dict[str, TextEmbedder], batches: list[tuple[torch.Tensor, torch.Tensor]],
                             repeats: int, calls: int, seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    for model in models.values():
        model(*batches[0])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(repeats):
        for name in rng.permutation(list(models)):
            tokens, start = 0, time.perf_counter()
            for call in range(calls):
                input_ids, attention_mask = batches[(repeat * calls + call) % len(batches)]  # (B, T) each
                models[name](input_ids, attention_mask)
                tokens += int(attention_mask.sum())
            rates[name].append(tokens / (time.perf_counter() - start))
        print(f"repeat {repeat + 1}/{repeats}: " + ", ".join(f"{n} {rates[n][-1]:,.0f}" for n in models), flush=True)
    return rates


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    layout = RunLayout(args.run)
    data = args.data or layout.dataset_dir()
    tokenizer = EmbeddingTokenizer.from_directory(layout.embedder_dir())
    texts, _ = held_out_texts(load_dataset(data), args.seed)
    batches = []
    for start in range(0, len(texts) - args.batch + 1, args.batch):
        ids, mask = tokenizer(texts[start : start + args.batch])
        batches.append((torch.from_numpy(ids), torch.from_numpy(mask)))
    models = build_models(args.run, args.shape, args.width_ratio, args.seed)
    rates = interleaved_tokens_per_s(models, batches, args.repeats, args.calls, args.seed)
    speedups = [s / t for s, t in zip(rates["student"], rates["teacher"])]
    tokens_per_text = float(np.mean([int(m.sum()) for _, m in batches])) / args.batch
    return {
        "run": str(args.run), "shape": args.shape, "batch": args.batch, "repeats": args.repeats, "calls": args.calls,
        "threads": torch.get_num_threads(), "tokens_per_text": round(tokens_per_text, 2),
        "machine": asdict(detect_machine("cpu")),
        "encoders": {name: {k: getattr(m.encoder.config, k) for k in
                            ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                             "num_hidden_layers")} | {"parameters": count_parameters(m)} for name, m in models.items()},
        "tokens_per_s": {name: interval(values) for name, values in rates.items()},
        "speedup": interval(speedups),
        "raw": {name: [round(v, 1) for v in values] for name, values in rates.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/studies/embedder-cost/distill_speed.py", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--run", required=True, type=Path, help="run folder with embed/model (and distill/model for --shape trained)")
    add("--shape", default=TRAINED, choices=(TRAINED, *RANDOM_SHAPES), help="trained pair, or a random shape pruned")
    add("--width-ratio", type=float, default=0.5, help="random shapes: the pruned widths / the teacher's")
    add("--data", type=Path, help="dataset folder (default: the one RUN/config.yaml names)")
    add("--batch", type=int, default=64, help="texts per forward")
    add("--repeats", type=int, default=10, help="timed repeats per model")
    add("--calls", type=int, default=5, help="batches per repeat")
    add("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's default")
    add("--seed", type=int, default=2024)
    add("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
