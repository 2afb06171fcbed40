"""Distillation of the stage-2 embedder into a narrower one (HomoDistil: the student starts as the teacher and is
pruned step by step to the target width while it learns to reproduce the teacher's embeddings).

    larr train distill --config quick --out runs/quick --width-ratio 0.5      # needs OUT/embed/model
    larr train ctr --config quick --out runs/quick --set ctr.embedder=distilled
    larr train all --config quick --out runs/quick --set ctr.embedder=distilled   # 1 -> 2 -> distill -> 3

Every step embeds ``distill.batch_size`` texts drawn from stage 2's training pairs (both sides of every kind) with
the frozen teacher and the student, and minimises the distillation loss (training/losses/distillation.py). At steps
``prune_every, 2 * prune_every, ..`` the student loses its least important channels (training/prune.py: hidden,
MLP intermediate, query heads) down to the next widths of the schedule; its optimizer restarts then (the parameters
are new tensors). Writes ``OUT/distill/model/`` (a normal TextEmbedder folder: it exports like stage 2's),
``OUT/distill/steps.csv`` and ``OUT/distill/result.json``: recall@10 per pair kind of teacher and student on stage
2's held-out pairs, widths, parameter counts, and the held-out distillation loss of the student against that of the
teacher pruned to the same widths in one shot (magnitude) without training.

One process (under torchrun it is an error); ``--resume`` returns the finished result when ``result.json`` exists and
otherwise starts again (a checkpoint of a model whose shape changes is not worth its complexity at these lengths).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from larr.data.schema import load_dataset
from larr.errors import ConfigError, MissingInputError
from larr.layout import RunLayout, Stage, Variant
from larr.models.embedder import EMBEDDER_FILE, TextEmbedder
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer
from larr.training.config import DistillLoss, PruneImportance, TrainConfig
from larr.training.embed import TRAIN_PAIRS_PER_KIND, evaluate
from larr.training.loop import (
    DistContext,
    StepLogger,
    atomic_write_text,
    batch_indices,
    init_distributed,
    lr_at,
    progress,
    seed_everything,
    seed_step,
)
from larr.training.losses.distillation import cosine_distillation, mse_distillation
from larr.training.pairs import PAIR_KINDS, Pairs, build_pairs
from larr.training.prune import (
    ImportanceTracker,
    Widths,
    channel_scores,
    prune_embedder,
    select_channels,
    width_schedule,
    widths_of,
)
from larr.training.runner import stage_main

RESULT_FILE = "result.json"
LOSSES = {DistillLoss.COSINE: cosine_distillation, DistillLoss.MSE: mse_distillation}


def pair_texts(pairs: dict[str, Pairs]) -> list[str]:
    """Every text of stage 2's pairs, both sides of every kind, in a fixed order."""
    return [text for kind in PAIR_KINDS for text in (*pairs[kind].left, *pairs[kind].right)]


def prune_plan(full: Widths, ratio: float, prune_steps: int, prune_every: int) -> dict[int, Widths]:
    """``{step: widths}``: before training step ``prune_every * k`` (k = 1..prune_steps) the student is cut to the
    k-th widths of :func:`training.prune.width_schedule`."""
    return {prune_every * (k + 1): widths for k, widths in enumerate(width_schedule(full, ratio, prune_steps))}


def prune_to(student: TextEmbedder, widths: Widths, weight_scores: dict[str, torch.Tensor]) -> TextEmbedder:
    scores = channel_scores(student, weight_scores)
    kept = select_channels(scores, widths, groups=student.encoder.config.num_key_value_heads)
    return prune_embedder(student, kept)


@torch.no_grad()
def held_out_loss(student: TextEmbedder, teacher_vectors: torch.Tensor, batches, loss) -> float:
    """Mean distillation loss over the held-out batches (eval mode)."""
    was_training = student.training
    student.eval()
    values = [float(loss(student.project(ids, mask), teacher_vectors[rows])) for rows, ids, mask in batches]
    student.train(was_training)
    return round(float(np.mean(values)), 5)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def held_out_batches(tokenizer: EmbeddingTokenizer, texts: list[str], batch_size: int) -> list[tuple]:
    """``texts`` in batches of ``batch_size``, each ``(rows (B,), input_ids (B, T), attention_mask (B, T))``."""
    batches = []
    for start in range(0, len(texts), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(texts)))
        ids, mask = tokenizer([texts[i] for i in rows])
        batches.append((rows, torch.from_numpy(ids), torch.from_numpy(mask)))
    return batches


def run(config: TrainConfig, out: Path, resume: bool = False) -> dict:
    """Distil ``OUT/embed/model`` into ``OUT/distill/model``; returns the result (see the module docstring).
    Set up (texts, teacher, student, the one-shot baseline) -> :func:`distil` -> save and score."""
    ctx = init_distributed()
    if ctx.enabled:
        raise ConfigError("larr train distill runs in one process; start it without torchrun")
    cfg = config.distill
    layout = RunLayout(out)
    result_file = layout.distill_dir / RESULT_FILE
    if resume and result_file.exists() and (layout.distilled_embedder_dir / EMBEDDER_FILE).exists():
        return json.loads(result_file.read_text(encoding="utf-8"))
    teacher_dir = layout.embedder_dir(Variant.LARR)
    if not (teacher_dir / EMBEDDER_FILE).exists():
        raise MissingInputError(f"{teacher_dir}: no stage-2 embedder; run `larr train embed --out {out}` first")
    dataset = load_dataset(config.data, splits=("train", "valid"))
    tokenizer = EmbeddingTokenizer.from_directory(teacher_dir)
    texts = pair_texts(build_pairs(dataset, "train", TRAIN_PAIRS_PER_KIND, config.seed, config.embed.history_length))
    eval_pairs = build_pairs(dataset, "valid", config.embed.eval_pairs, config.seed, config.embed.history_length,
                             scene_keep=1.0)

    seed_everything(config.seed)
    teacher = TextEmbedder.from_pretrained(teacher_dir).requires_grad_(False)  # eval mode
    student = TextEmbedder.from_pretrained(teacher_dir).train()  # the student starts as the teacher
    loss_fn = LOSSES[cfg.loss]
    full = widths_of(student)
    plan = prune_plan(full, cfg.width_ratio, cfg.prune_steps, cfg.prune_every)
    # held-out texts (the eval pairs'), for the distillation loss before/after
    eval_batches = held_out_batches(tokenizer, pair_texts(eval_pairs), cfg.batch_size)
    with torch.no_grad():
        eval_targets = torch.cat([teacher.project(ids, mask) for _, ids, mask in eval_batches])  # (N, D)
    # the baseline: the teacher cut to the final widths in one shot (magnitude), without training
    one_shot = prune_to(teacher, plan[max(plan)], ImportanceTracker(PruneImportance.MAGNITUDE).scores(teacher))
    loss_one_shot = held_out_loss(one_shot, eval_targets, eval_batches, loss_fn)
    del one_shot

    student = distil(config, teacher, student, tokenizer, texts, plan, loss_fn, layout.distill_dir, ctx)
    student.eval()
    input_config = EmbeddingInputConfig.load(teacher_dir)
    student.save_pretrained(layout.distilled_embedder_dir, AutoTokenizer.from_pretrained(teacher_dir), input_config)
    result = {
        "width_ratio": cfg.width_ratio,
        "widths": {"teacher": vars(full), "student": vars(widths_of(student))},
        "parameters": {"teacher": count_parameters(teacher), "student": count_parameters(student)},
        "held_out_loss": {"pruned_untrained": loss_one_shot,
                          "distilled": held_out_loss(student, eval_targets, eval_batches, loss_fn)},
        "recall@10": {"teacher": evaluate(teacher, tokenizer, eval_pairs), "student": evaluate(student, tokenizer, eval_pairs)},
    }
    atomic_write_text(result_file, json.dumps(result, indent=2) + "\n")
    return result


def distil(config: TrainConfig, teacher: TextEmbedder, student: TextEmbedder, tokenizer: EmbeddingTokenizer,
           texts: list[str], plan: dict[int, Widths], loss_fn, stage_dir: Path, ctx: DistContext) -> TextEmbedder:
    """``distill.steps`` steps of ``student`` learning ``teacher``'s embeddings of ``texts``, cut to ``plan[step]``
    before each step the plan names (a new optimizer then: the parameters are new tensors); returns the final,
    pruned student."""
    cfg = config.distill
    importance = ImportanceTracker(cfg.importance)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    logger = StepLogger(stage_dir, ctx)
    bar = progress(cfg.steps, 0, "distill", ctx)
    for step in range(cfg.steps):
        if step in plan:
            student = prune_to(student, plan[step], importance.scores(student))
            importance.reset()
            optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
        seed_step(config.seed, step)
        lr = lr_at(step, cfg.learning_rate, cfg.warmup_steps, cfg.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = batch_indices(step, len(texts), cfg.batch_size, config.seed)  # (B,)
        loss = distill_step(student, teacher, optimizer, importance, tokenizer([texts[i] for i in rows]), loss_fn)
        widths = widths_of(student)
        logger.log(step + 1, loss=loss, lr=lr, hidden=widths.hidden, intermediate=widths.intermediate,
                   heads_per_group=widths.heads_per_group)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", hidden=widths.hidden)
    bar.close()
    return student


def distill_step(student: TextEmbedder, teacher: TextEmbedder, optimizer: torch.optim.Optimizer,
                 importance: ImportanceTracker, batch: tuple[np.ndarray, np.ndarray], loss_fn) -> float:
    """One optimiser step of ``student`` towards ``teacher`` on ``batch`` (input_ids, attention_mask: (B, T) each),
    the raw gradients added to ``importance``; returns the loss."""
    ids, mask = (torch.from_numpy(a) for a in batch)  # (B, T) each
    with torch.no_grad():
        target = teacher.project(ids, mask)  # (B, D)
    loss = loss_fn(student.project(ids, mask), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    importance.accumulate(student)  # the raw gradients, before clipping
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    optimizer.step()
    return loss.item()


train = run  # as ``larr train distill`` runs it


def main(argv: list[str] | None = None) -> int:
    return stage_main(Stage.DISTILL, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
