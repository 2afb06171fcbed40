"""Stage 1 — continual pretraining of the LM on the recommendation corpus: next-token loss for a causal LM,
masked-LM loss (BERT's 15 % / 80-10-10 masking, as transformers' DataCollatorForLanguageModeling) for an encoder base.

    larr train pretrain --config tiny --out runs/tiny
    torchrun --nproc_per_node 2 -m larr.training.pretrain --config tiny --out runs/tiny   # DDP, gloo on CPU
    larr train pretrain --config tiny --out runs/tiny --resume                           # after a kill

Writes ``OUT/pretrain/model/`` (``save_pretrained``: safetensors + tokenizer), ``OUT/pretrain/steps.csv``
and ``OUT/pretrain/checkpoint.pt`` (atomic; what ``--resume`` continues from).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from larr.data.schema import load_dataset
from larr.errors import DataValidationError
from larr.layout import RunLayout, Stage, Variant
from larr.training.config import TrainConfig
from larr.training.corpus import build_corpus
from larr.training.llm import (
    BaseKind,
    base_kind,
    build_tiny_model,
    copy_pooling_config,
    document_separator,
    load_base_model,
    train_bpe_tokenizer,
)
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
from larr.training.packaged_base import resolve_base_model
from larr.training.runner import stage_main

IGNORE_INDEX = -100  # cross-entropy ignores these labels (tokens masked-LM does not predict)
MLM_EVAL_SEED = 1  # eval blocks are masked the same way before and after stage 1


@dataclass
class PackedCorpus:
    train_blocks: torch.Tensor  # (N_train, block_size + 1) int64: input = [:, :-1], target = [:, 1:]
    eval_blocks: torch.Tensor  # (N_eval, block_size + 1)


def pack_documents(token_ids: list[list[int]], eos_id: int, block_size: int, eval_fraction: float, seed: int) -> PackedCorpus:
    """Concatenate documents (separated by ``eos_id``: SEP for an encoder) and cut ``block_size + 1`` windows,
    nanoGPT style."""
    stream = np.fromiter((t for ids in token_ids for t in (*ids, eos_id)), dtype=np.int64)
    window = block_size + 1
    count = len(stream) // window
    if count < 2:
        raise DataValidationError(
            f"the stage-1 corpus has {len(stream)} tokens, too few for two blocks of {window} "
            "(more data, or a smaller pretrain.block_size)"
        )
    blocks = torch.from_numpy(stream[: count * window].reshape(count, window).copy())
    order = torch.from_numpy(np.random.default_rng(seed).permutation(count))
    num_eval = max(1, int(count * eval_fraction))
    return PackedCorpus(train_blocks=blocks[order[num_eval:]], eval_blocks=blocks[order[:num_eval]])


@torch.no_grad()
def eval_loss(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int = 32, loss_fn: Callable | None = None) -> float:
    """Mean loss over ``blocks``; ``loss_fn(model, batch, generator)`` (default: next-token) gets one generator
    seeded the same on every call, so masked-LM eval masks the same tokens before and after training."""
    loss_fn = loss_fn or _lm_loss
    generator = torch.Generator().manual_seed(MLM_EVAL_SEED)
    model.eval()
    losses = []
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size]
        losses.append(loss_fn(model, batch, generator).item())
    model.train()
    return float(np.mean(losses))


def _lm_loss(model: torch.nn.Module, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    logits = model(input_ids=batch[:, :-1]).logits  # (B, T, V)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())


def mask_tokens(
    input_ids: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking (transformers' DataCollatorForLanguageModeling): ``(inputs, labels)``, both (B, T).

    Each non-special token is picked with ``probability``; a picked token becomes ``mask_id`` (80 %), a random id
    (10 %) or stays (10 %), and only picked tokens have a label (the rest are IGNORE_INDEX).
    """
    def draw(p: float) -> torch.Tensor:
        return torch.bernoulli(torch.full(input_ids.shape, p), generator=generator).bool()

    picked = draw(probability) & ~torch.isin(input_ids, special_ids)  # (B, T)
    labels = input_ids.masked_fill(~picked, IGNORE_INDEX)
    masked = picked & draw(0.8)
    randomised = picked & ~masked & draw(0.5)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    inputs = input_ids.masked_fill(masked, mask_id).where(~randomised, random_ids)
    return inputs, labels


def masked_lm_loss(tokenizer, probability: float) -> Callable:
    """``loss(model, batch (B, block_size + 1), generator)``: masked-LM cross-entropy on the block's first
    ``block_size`` tokens (the same tokens next-token loss reads) with every special token left unmasked."""
    special_ids = torch.tensor(sorted(tokenizer.all_special_ids))
    mask_id, vocab_size = tokenizer.mask_token_id, len(tokenizer)

    def loss(model: torch.nn.Module, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        inputs, labels = mask_tokens(batch[:, :-1], special_ids, mask_id, vocab_size, probability, generator)
        logits = model(input_ids=inputs).logits  # (B, T, V)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)

    return loss


@dataclass
class Stage1Setup:
    model: torch.nn.Module
    tokenizer: object  # PreTrainedTokenizerFast
    corpus: PackedCorpus
    loss_fn: Callable  # (model, batch, generator) -> scalar loss
    base_dir: Path | None  # the base checkpoint folder (None: the tiny model built from scratch)


def prepare(config: TrainConfig, ctx: DistContext) -> Stage1Setup:
    """Model + tokenizer + packed corpus + loss (every rank builds the same, from the same seed)."""
    dataset = load_dataset(config.data, splits=("train",))
    features = dataset.info.scene_features
    documents = build_corpus(
        dataset,
        config.seed,
        config.pretrain.records_per_user_cap,
        knowledge_repeats=config.pretrain.knowledge_repeats,
        behaviour=config.pretrain.behaviour,
    )
    kind, base_dir = BaseKind.CAUSAL, None
    if config.pretrain.base_model:
        base_dir = resolve_base_model(config.pretrain.base_model)
        kind = base_kind(base_dir)
        seed_everything(config.seed)  # resizing draws the added tokens' embeddings (mean-and-covariance init)
        model, tokenizer = load_base_model(base_dir, features)
    else:
        tokenizer = train_bpe_tokenizer(documents, config.pretrain.model.vocab_size, features)
        seed_everything(config.seed)
        model = build_tiny_model(config.pretrain.model, tokenizer)
    token_ids = tokenizer(documents, add_special_tokens=False)["input_ids"]
    corpus = pack_documents(
        token_ids, document_separator(tokenizer, kind), config.pretrain.block_size, config.pretrain.eval_fraction,
        config.seed,
    )
    loss_fn = _lm_loss if kind is BaseKind.CAUSAL else masked_lm_loss(tokenizer, config.pretrain.mlm_probability)
    return Stage1Setup(model, tokenizer, corpus, loss_fn, base_dir)


def save_lm(setup: Stage1Setup, directory: Path) -> None:
    """The LM (its stage-1 head too), its tokenizer and the base's pooling config, as one HF folder."""
    setup.model.save_pretrained(directory, safe_serialization=True)
    setup.tokenizer.save_pretrained(directory)
    if setup.base_dir is not None:
        copy_pooling_config(setup.base_dir, directory)


def run(config: TrainConfig, out: Path, resume: bool = False, save_init: bool = False) -> dict:
    """Train stage 1; returns eval losses before/after and sizes. ``save_init`` also writes the model as it
    was *before* stage 1 to ``OUT/pretrain/init`` (the no-stage-1 ablation starts stage 2 there)."""
    ctx = init_distributed()
    layout = RunLayout(out)
    stage_dir = layout.pretrain_dir
    cfg = config.pretrain
    setup = prepare(config, ctx)
    model, corpus, loss_fn = setup.model, setup.corpus, setup.loss_fn
    if save_init and ctx.is_main and not (resume and layout.base_lm_dir.exists()):
        save_lm(setup, layout.base_lm_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    start_step, extra = 0, {}
    if resume and (stage_dir / "checkpoint.pt").exists():
        start_step, extra = load_checkpoint(stage_dir, model, optimizer)
    loss_before = extra.get("eval_loss_before")
    if loss_before is None:
        loss_before = eval_loss(model, corpus.eval_blocks, loss_fn=loss_fn)
    ddp_model = wrap_ddp(model, ctx)
    logger = StepLogger(stage_dir, ctx, resume_from_step=start_step)
    model.train()
    bar = progress(cfg.max_steps, start_step, "stage 1 pretrain", ctx)
    for step in range(start_step, cfg.max_steps):
        seed_step(config.seed, step)
        rows = ctx.shard(batch_indices(step, len(corpus.train_blocks), cfg.batch_size, config.seed))
        lr = lr_at(step, cfg.learning_rate, cfg.warmup_steps, cfg.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_fn(ddp_model, corpus.train_blocks[rows])  # masks (encoder) from the step-seeded global RNG
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        mean_loss = ctx.all_reduce_mean(loss).item()
        logger.log(step + 1, loss=mean_loss, lr=lr)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 and ctx.is_main:
            save_checkpoint(stage_dir, step + 1, model, optimizer, {"eval_loss_before": loss_before})
    bar.close()
    result = {
        "eval_loss_before": round(loss_before, 4),
        "eval_loss_after": round(eval_loss(model, corpus.eval_blocks, loss_fn=loss_fn), 4),
        "steps": cfg.max_steps,
        "train_blocks": len(corpus.train_blocks),
        "block_size": cfg.block_size,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if ctx.is_main:
        save_checkpoint(stage_dir, cfg.max_steps, model, optimizer, {"eval_loss_before": loss_before})
        save_lm(setup, layout.pretrained_lm_dir)
    ctx.barrier()
    return result


def train(config: TrainConfig, out: Path, resume: bool = False) -> dict:
    """Stage 1 as ``larr train pretrain`` runs it: keeps the base model too when ``no_stage1`` is configured."""
    return run(config, out, resume, save_init=Variant.NO_STAGE1 in config.ctr.variants)


def main(argv: list[str] | None = None) -> int:
    return stage_main(Stage.PRETRAIN, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
