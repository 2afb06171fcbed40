"""Stage 2 — contrastive fine-tuning of the stage-1 LM into a text embedder.

    larr train embed --config tiny --out runs/tiny            # needs OUT/pretrain/model
    torchrun --nproc_per_node 2 -m larr.training.embed --config tiny --out runs/tiny

Every step draws ``batch_size`` pairs of each kind (user–user, item–item, user–item, see
:mod:`larr.training.pairs`, plus the optional item-views and persona kinds whose weight is above 0); each kind's
InfoNCE uses the other pairs of the batch as negatives and the losses are summed with their weights. Writes
``OUT/embed/model/`` (a :class:`TextEmbedder`), ``OUT/embed/steps.csv`` and recall@10 on held-out pairs for the
stage-1 model (same pooling, no projection) and the stage-2 embedder. The pooling and the input template are the
stage-1 folder's (:func:`larr.models.embedder.checkpoint_pooling`): last token for a causal LM, mean for
all-MiniLM-L6-v2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from larr.data.schema import load_dataset
from larr.errors import MissingInputError
from larr.layout import RunLayout, Stage, Variant
from larr.models.embedder import TextEmbedder, checkpoint_pooling, embed_texts, input_template
from larr.tokenization import TOKENIZER_FILE, EmbeddingInputConfig, EmbeddingTokenizer
from larr.training.config import EmbedConfig, TrainConfig
from larr.training.loop import (
    DistContext,
    StepLogger,
    batch_indices,
    init_distributed,
    load_checkpoint,
    lr_at,
    progress,
    save_checkpoint,
    seed_everything,
    seed_step,
    wrap_ddp,
)
from larr.training.losses.info_nce import Temperature, info_nce
from larr.training.pairs import PAIR_KINDS, VIEW_KINDS, Pairs, build_pairs
from larr.training.runner import stage_main

TRAIN_PAIRS_PER_KIND = 20_000


def recall_at_k(embedder: TextEmbedder, tokenizer: EmbeddingTokenizer, pairs: Pairs, k: int = 10) -> float:
    """Share of held-out pairs whose right side ranks in the top k among all right sides for its left."""
    left = embed_texts(embedder, tokenizer, pairs.left)  # (M, D)
    right = embed_texts(embedder, tokenizer, pairs.right)  # (M, D)
    scores = left @ right.T  # (M, M)
    positive = np.diag(scores)[:, None]
    rank = (scores > positive).sum(axis=1)  # 0 = best
    return float((rank < k).mean())


def evaluate(embedder: TextEmbedder, tokenizer: EmbeddingTokenizer, eval_pairs: dict[str, Pairs]) -> dict[str, float]:
    return {kind: round(recall_at_k(embedder, tokenizer, pairs), 4) for kind, pairs in eval_pairs.items()}


def loss_weights(cfg: EmbedConfig) -> dict[str, float]:
    """Each trained pair kind's loss weight, in forward order: the three kinds always (today's loss), a view kind
    only when its weight is above 0 (at 0 its pairs are neither built nor embedded, so the run is today's)."""
    weights = {"user_user": cfg.weight_user_user, "item_item": cfg.weight_item_item, "user_item": cfg.weight_user_item}
    views = {"item_views": cfg.weight_item_views, "persona": cfg.weight_persona}
    assert tuple(weights) == PAIR_KINDS and tuple(views) == VIEW_KINDS
    return weights | {kind: weight for kind, weight in views.items() if weight > 0}


class ContrastiveModel(torch.nn.Module):
    """Embedder + temperature behind one forward, so DDP syncs both."""

    def __init__(self, embedder: TextEmbedder, temperature: Temperature):
        super().__init__()
        self.embedder = embedder
        self.temperature = temperature

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embedder(input_ids, attention_mask), self.temperature()


def _tokenize(tokenizer: EmbeddingTokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids, attention_mask = tokenizer(texts)
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)


def stage2_pairs(config: TrainConfig, views: tuple[str, ...]) -> tuple[dict[str, Pairs], dict[str, Pairs]]:
    """Training pairs (train split, :data:`TRAIN_PAIRS_PER_KIND` of each kind) and held-out pairs (valid split,
    ``embed.eval_pairs`` of each kind, every scene feature kept), with the view kinds ``views`` names."""
    cfg = config.embed
    dataset = load_dataset(config.data, splits=("train", "valid"))
    persona = {"persona_top_k": cfg.persona_top_k, "persona_recent": cfg.persona_recent}
    train_pairs = build_pairs(
        dataset, "train", TRAIN_PAIRS_PER_KIND, config.seed, cfg.history_length, views=views, **persona
    )
    eval_pairs = build_pairs(
        dataset, "valid", cfg.eval_pairs, config.seed, cfg.history_length, scene_keep=1.0, views=views, **persona
    )
    return train_pairs, eval_pairs


def run(config: TrainConfig, out: Path, resume: bool = False, variant: Variant = Variant.LARR) -> dict:
    """Train the stage-2 embedder ``variant`` reads: from stage 1's LM (``OUT/pretrain/model``) into
    ``OUT/embed/``, or for ``no_stage1`` from the base as it was before stage 1 (``OUT/pretrain/init``) into
    that ablation's own folder (``RunLayout.embed_dir``). Set up -> :func:`train_embedder` -> save and score."""
    ctx = init_distributed()
    cfg = config.embed
    layout = RunLayout(out)
    variant = Variant.parse(variant)
    stage_dir = layout.embed_dir(variant)
    from_base = variant.embedder_source is Variant.NO_STAGE1
    lm_dir = layout.base_lm_dir if from_base else layout.pretrained_lm_dir
    if not (lm_dir / TOKENIZER_FILE).exists():
        raise MissingInputError(f"{lm_dir}: no stage-1 model; run `larr train pretrain --out {out}` first")
    pooling = checkpoint_pooling(lm_dir)
    hf_tokenizer = AutoTokenizer.from_pretrained(lm_dir, local_files_only=True)
    input_config = EmbeddingInputConfig(max_length=cfg.max_length, **input_template(pooling, hf_tokenizer))
    tokenizer = EmbeddingTokenizer(hf_tokenizer.backend_tokenizer, input_config)
    weights = loss_weights(cfg)
    train_pairs, eval_pairs = stage2_pairs(config, views=tuple(kind for kind in weights if kind in VIEW_KINDS))

    seed_everything(config.seed)  # the projection's initial weights are a function of the seed alone
    stage1 = TextEmbedder(AutoModel.from_pretrained(lm_dir, local_files_only=True), projection_dim=None, pooling=pooling)
    recall_before = evaluate(stage1, tokenizer, eval_pairs) if ctx.is_main else {}
    embedder = TextEmbedder(stage1.encoder, cfg.projection_dim, pooling)
    model = ContrastiveModel(embedder, Temperature(cfg.temperature, cfg.learn_temperature))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    start_step = 0
    if resume and (stage_dir / "checkpoint.pt").exists():
        start_step, _ = load_checkpoint(stage_dir, model, optimizer)
    train_embedder(config, model, optimizer, tokenizer, train_pairs, weights, start_step, stage_dir, ctx)
    result = {}
    if ctx.is_main:
        save_checkpoint(stage_dir, cfg.max_steps, model, optimizer)
        embedder.save_pretrained(layout.embedder_dir(variant), hf_tokenizer, input_config)
        result = {"recall@10": {"stage1": recall_before, "stage2": evaluate(embedder, tokenizer, eval_pairs)}}
    ctx.barrier()
    return result


def train_embedder(config: TrainConfig, model: ContrastiveModel, optimizer: torch.optim.Optimizer,
                   tokenizer: EmbeddingTokenizer, train_pairs: dict[str, Pairs], weights: dict[str, float],
                   start_step: int, stage_dir: Path, ctx: DistContext) -> None:
    """Steps ``start_step .. embed.max_steps`` (learning rate by :func:`lr_at`), logging each to ``steps.csv`` and
    checkpointing every ``embed.checkpoint_every``."""
    cfg = config.embed
    ddp_model = wrap_ddp(model, ctx)
    logger = StepLogger(stage_dir, ctx, resume_from_step=start_step)
    model.embedder.train()
    bar = progress(cfg.max_steps, start_step, f"stage 2 {stage_dir.name}", ctx)
    for step in range(start_step, cfg.max_steps):
        seed_step(config.seed, step)
        lr = lr_at(step, cfg.learning_rate, cfg.warmup_steps, cfg.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = contrastive_step(config, model, ddp_model, optimizer, tokenizer, train_pairs, weights, step, ctx)
        logged = {f"loss_{k}": ctx.all_reduce_mean(v).item() for k, v in losses.items()}
        logger.log(step + 1, loss=sum(logged.values()), lr=lr, temperature=model.temperature().item(), **logged)
        bar.update(1)
        bar.set_postfix(loss=f"{sum(logged.values()):.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 and ctx.is_main:
            save_checkpoint(stage_dir, step + 1, model, optimizer)
    bar.close()


def contrastive_step(config: TrainConfig, model: ContrastiveModel, ddp_model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, tokenizer: EmbeddingTokenizer, train_pairs: dict[str, Pairs],
                     weights: dict[str, float], step: int, ctx: DistContext) -> dict[str, torch.Tensor]:
    """One optimiser step on the weighted sum of every kind's InfoNCE over the global batch of ``step`` (this rank's
    share through ``ddp_model``, the wrapper of ``model``); returns each kind's loss, () on this rank."""
    texts, spans = batch_texts(train_pairs, tuple(weights), step, config.embed.batch_size, config.seed, ctx)
    vectors, tau = ddp_model(*_tokenize(tokenizer, texts))  # (sum over kinds of 2b, D), ()
    losses = {}
    for kind, start, count in spans:
        # this rank's b = batch_size / world_size rows, gathered: every rank scores the global batch's pairs
        left = ctx.gather_rows(vectors[start : start + count])  # (batch_size, D)
        right = ctx.gather_rows(vectors[start + count : start + 2 * count])  # (batch_size, D)
        losses[kind] = info_nce(left, right, tau)
    total = sum(weights[kind] * loss for kind, loss in losses.items())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return losses


def batch_texts(train_pairs: dict[str, Pairs], kinds: tuple[str, ...], step: int, batch_size: int, seed: int,
                ctx: DistContext) -> tuple[list[str], list[tuple[str, int, int]]]:
    """This rank's texts of step ``step`` for one forward over all kinds (DDP wants one forward per backward): for
    each kind in order its b left texts then its b right texts, and per kind ``(kind, offset of its left texts, b)``.
    Each kind draws its global batch from its own stream (``seed + its index``)."""
    texts, spans = [], []
    for kind_index, kind in enumerate(kinds):
        pairs = train_pairs[kind]
        rows = ctx.shard(batch_indices(step, len(pairs), batch_size, seed + kind_index))
        spans.append((kind, len(texts), len(rows)))
        texts += [pairs.left[i] for i in rows] + [pairs.right[i] for i in rows]
    return texts, spans


def train(config: TrainConfig, out: Path, resume: bool = False) -> dict:
    """Stage 2 as ``larr train embed`` runs it: LARR's embedder, then the no_stage1 one when configured
    (its recall@10 reported as ``recall@10.no_stage1``)."""
    result = run(config, out, resume)
    if Variant.NO_STAGE1 in config.ctr.variants:
        ablation = run(config, out, resume, variant=Variant.NO_STAGE1)
        if init_distributed().is_main:
            result["recall@10"][Variant.NO_STAGE1.value] = ablation["recall@10"]["stage2"]
    return result


def main(argv: list[str] | None = None) -> int:
    return stage_main(Stage.EMBED, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
