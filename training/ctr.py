"""Stage 3 — alignment + CTR on frozen LLM features, with the ID-only baseline and the ablations.

    larr train ctr --config tiny --out runs/tiny               # needs OUT/embed/model (and the ablations' inputs)
    torchrun --nproc_per_node 2 -m larr.training.ctr --config tiny --out runs/tiny

Variants (``ctr.variants`` in the config):

===============  =====================================================================================
``larr``         stage-2 embedder, per-feature embeddings -> aggregation encoder, alignment loss on
``id_only``      the same backbone over the same ID fields, no LLM input at all
``no_stage1``    like larr, but stage 2 started from the base model as it was *before* stage 1
``no_stage2``    like larr, but the stage-1 LM pooled as its checkpoint says (last token for a causal LM), no stage 2
``no_alignment`` like larr with ``align_weight = 0``
``full_text``    like larr, but the whole scene is one text embedded per example (K' = 1)
===============  =====================================================================================

The LLM is frozen: every distinct (feature, text) is embedded **once** into a table (the same idea as
the server's feature cache) and batches gather from it. With ``ctr.history`` on, every row also carries the
item ids of its selected history sub-sequence (:mod:`larr.data.subsequence`, one selection per (user, context
prototype)), which the backbone's target attention reads. Per variant, ``RunLayout.ctr_dir(variant)`` holds the
model (``ctr.json``, ``model.safetensors``, ``vocab.json``), ``steps.csv`` and ``result.json``.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from larr.contract import UNSEEN_SCENE_FILL
from larr.data.schema import Dataset, Interactions, load_dataset
from larr.data.subsequence import (
    PADDING,
    ContextPrototypes,
    HistoryMode,
    UserEvents,
    history_matrix,
    request_contexts,
)
from larr.errors import MissingInputError
from larr.layout import EmbedderSource, RunLayout, Stage, Variant
from larr.models.ctr_model import CTRModelSpec, LarrCTR, index_table
from larr.models.embedder import TextEmbedder, checkpoint_pooling, embed_texts
from larr.models.field_vocab import FieldVocab
from larr.text import format_scene, format_scene_feature
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer
from larr.training.config import CTRConfig, TrainConfig
from larr.training.corpus import item_texts
from larr.training.loop import (
    DistContext,
    StepLogger,
    atomic_write_text,
    batch_indices,
    init_distributed,
    load_checkpoint,
    progress,
    save_checkpoint,
    seed_everything,
    seed_step,
    wrap_ddp,
)
from larr.training.losses.alignment import alignment_loss
from larr.training.metrics import ctr_metrics
from larr.training.runner import stage_main

RESULT_FILE = "result.json"


# --------------------------------------------------------------------------------------------- frozen LLM features


def load_frozen_embedder(
    out: Path, variant: Variant, source: EmbedderSource = EmbedderSource.STAGE2
) -> tuple[TextEmbedder, EmbeddingTokenizer]:
    """The frozen text embedder a variant reads its features from (see ``Variant.embedder_source``; ``source``
    picks stage 2's or the distilled one for LARR's, ``ctr.embedder``)."""
    layout = RunLayout(out)
    variant = Variant.parse(variant)
    if variant.embedder_source is Variant.NO_STAGE2:
        # the stage-1 LM itself, pooled as its checkpoint says, with stage 2's inputs (length and template)
        lm_dir = layout.pretrained_lm_dir
        encoder = AutoModel.from_pretrained(lm_dir, local_files_only=True)
        embedder = TextEmbedder(encoder, projection_dim=None, pooling=checkpoint_pooling(lm_dir)).eval()
        input_config = EmbeddingInputConfig.load(layout.embedder_dir(Variant.LARR))
        hf_tokenizer = AutoTokenizer.from_pretrained(lm_dir, local_files_only=True)
        return embedder, EmbeddingTokenizer(hf_tokenizer.backend_tokenizer, input_config)
    model_dir = layout.embedder_dir(variant, source)
    if not model_dir.exists():
        command = "distill" if model_dir == layout.distilled_embedder_dir else "embed"
        raise MissingInputError(f"{model_dir}: missing; run `larr train {command} --out {out}` first (variant {variant})")
    return TextEmbedder.from_pretrained(model_dir), EmbeddingTokenizer.from_directory(model_dir)


def distributed_embed(embedder, tokenizer, texts: list[str], batch_size: int, ctx: DistContext, desc: str) -> np.ndarray:
    """Embed ``texts`` with every rank taking an interleaved share, then gather: (N, D) float32."""
    if not ctx.enabled:
        return embed_texts(embedder, tokenizer, texts, batch_size, desc=desc)
    import torch.distributed as dist

    mine = embed_texts(embedder, tokenizer, texts[ctx.rank :: ctx.world_size], batch_size, desc=desc if ctx.is_main else None)
    gathered: list[np.ndarray | None] = [None] * ctx.world_size
    dist.all_gather_object(gathered, mine)
    out = np.zeros((len(texts), mine.shape[1]), dtype=np.float32)
    for rank, part in enumerate(gathered):
        out[rank :: ctx.world_size] = part
    return out


@dataclass
class LLMFeatures:
    """Frozen text embeddings for every split, deduplicated: rows of ``table`` gathered by ``codes``."""

    table: torch.Tensor  # (V, D): every distinct (feature, text) once
    codes: dict[str, np.ndarray]  # split -> (N, K') int64 rows of ``table``
    item_embeddings: torch.Tensor  # (I, D) static item text embeddings


def scene_text_codes(
    features: tuple[str, ...], splits: dict[str, Interactions], full_text: bool
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The distinct embedder inputs of ``splits`` (every (feature, text), or every whole scene when ``full_text``),
    each once, and per split its (N, K') int64 rows in that list."""
    index: dict[str, int] = {}
    codes = {}
    for split, rows in splits.items():
        if full_text:
            texts = [[format_scene(features, rows.scene_row(n))] for n in range(len(rows))]
        else:
            texts = [[format_scene_feature(f, rows.scene[k][n]) for k, f in enumerate(features)] for n in range(len(rows))]
        codes[split] = np.array([[index.setdefault(t, len(index)) for t in row] for row in texts], dtype=np.int64)
    return codes, list(index)


def build_llm_features(
    dataset: Dataset, embedder, tokenizer, full_text: bool, batch_size: int, ctx: DistContext
) -> LLMFeatures:
    codes, distinct = scene_text_codes(dataset.info.scene_features, dataset.splits, full_text)
    kind = "full scene texts" if full_text else "(feature, text) pairs"
    table = distributed_embed(embedder, tokenizer, distinct, batch_size, ctx, f"embedding {len(distinct)} {kind}")
    items = distributed_embed(embedder, tokenizer, item_texts(dataset), batch_size, ctx, "embedding item texts")
    return LLMFeatures(torch.from_numpy(table), codes, torch.from_numpy(items))


# --------------------------------------------------------------------------------------------- ID features


def fit_vocab(dataset: Dataset) -> FieldVocab:
    """Fields ``[user, item, *scene features]`` fitted on the train split (0 = unseen)."""
    train = dataset.train
    names = ["user", "item", *dataset.info.scene_features]
    return FieldVocab(names).fit([train.user_id, train.item_id, *train.scene])


def sparse_features(vocab: FieldVocab, rows: Interactions) -> np.ndarray:
    return vocab.transform([rows.user_id, rows.item_id, *rows.scene])  # (N, F)


# --------------------------------------------------------------------------------------------- history


def history_items(config: TrainConfig, dataset: Dataset) -> dict[str, np.ndarray] | None:
    """split -> (N, L) item ids of each row's selected history events (PADDING after); None when history is off.

    The prototypes are fitted on the whole history.csv: it is the users' past, before every split."""
    cfg = config.ctr
    if cfg.history is HistoryMode.OFF:
        return None
    history = dataset.history
    if history is None:
        raise MissingInputError(
            f"ctr.history={cfg.history} needs {config.data}/history.csv (e.g. `larr data synth --history-length 50`)"
        )
    categories = sorted(set(dataset.items.category))
    item_category = np.array([categories.index(c) for c in dataset.items.category])  # (I,)
    prototypes = ContextPrototypes.fit(history, item_category, cfg.prototypes)
    events = UserEvents.build(history, prototypes, dataset.info.num_users)
    out = {}
    for split, rows in dataset.splits.items():
        targets = np.array([prototypes.of(c) for c in request_contexts(history, rows, dataset.info.scene_features)])
        out[split] = history_matrix(events, rows.user_id, targets, cfg.history, cfg.history_length, cfg.history_recent)
    return out


def history_field_indices(vocab: FieldVocab, items: np.ndarray, num_items: int) -> np.ndarray:
    """(N, L) item ids (PADDING kept) -> the item field's vocabulary indices (0 = an item train never showed)."""
    table = index_table(vocab.to_dict()["values"][vocab.field_names.index("item")], num_items).numpy()
    return np.where(items == PADDING, PADDING, table[np.maximum(items, 0)])


# --------------------------------------------------------------------------------------------- training


@dataclass
class SplitTensors:
    sparse: torch.Tensor  # (N, F)
    item_rows: torch.Tensor  # (N,) item id + 1
    codes: torch.Tensor | None  # (N, K') rows of the LLM feature table
    labels: torch.Tensor  # (N,)
    users: np.ndarray  # (N,)
    history: torch.Tensor | None = None  # (N, L) item field indices of the selected history, -1 = padding


def split_tensors(vocab: FieldVocab, rows: Interactions, codes: np.ndarray | None,
                  history: np.ndarray | None = None) -> SplitTensors:
    return SplitTensors(
        sparse=torch.from_numpy(sparse_features(vocab, rows)),
        item_rows=torch.from_numpy(rows.item_id + 1),
        codes=None if codes is None else torch.from_numpy(codes),
        labels=torch.from_numpy(rows.label),
        users=rows.user_id,
        history=None if history is None else torch.from_numpy(history),
    )


def scene_dropout_mask(seed: int, step: int, batch_size: int, features: int, p: float) -> torch.Tensor | None:
    """(B, K') bool, True = replace that example's scene-feature embedding by the unseen-text row; None when p = 0.

    A function of (seed, step) alone, like the step's batch: a resumed run drops the same features, and it
    is drawn for the global batch (then sharded) so the result does not depend on the number of ranks.
    """
    if p <= 0.0:
        return None
    # its own stream (the trailing 1), not torch's: seed_step seeds torch from (seed, step) for model dropout,
    # and the mask must not be correlated with those draws
    draws = np.random.default_rng((seed, step, 1)).random((batch_size, features))
    return torch.from_numpy(draws < p)


def forward_rows(model, data: SplitTensors, rows, table: torch.Tensor | None, dropped: torch.Tensor | None = None):
    """``dropped`` (B, K') bool: scene embeddings that training replaces by the unseen-text row (the LLM input
    only; the scene ID fields in ``sparse`` stay), as a server with fresh_text_policy 'async' sends them."""
    scene = None if data.codes is None else table[data.codes[rows]]  # (B, K', D)
    if scene is not None and dropped is not None:
        scene = scene.masked_fill(dropped[..., None], UNSEEN_SCENE_FILL)
    history = None if data.history is None else data.history[rows]  # (B, L)
    return model(data.sparse[rows], scene, data.item_rows[rows], history)


@torch.no_grad()
def predict(model: LarrCTR, data: SplitTensors, table: torch.Tensor | None, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(data.labels), batch_size):
        rows = slice(start, start + batch_size)
        out.append(torch.sigmoid(forward_rows(model, data, rows, table).logits).numpy())
    model.train()
    return np.concatenate(out)


class Plateau(enum.Enum):
    """What one epoch's validation AUC means for early stopping and the learning rate."""

    IMPROVED = "improved"  # a new best: keep its weights
    STALE = "stale"  # no gain, not yet lr_decay_patience in a row
    DECAY = "decay"  # the lr_decay_patience-th (2x-th, ...) epoch in a row without gain: decay the learning rate


def record_validation(state: dict, auc: float, lr_decay_patience: int) -> Plateau:
    """Update ``state["best_auc"]`` / ``state["stale_epochs"]`` with one epoch's validation AUC.

    The run stops once ``stale_epochs`` reaches ``ctr.patience``; with ``lr_decay_patience`` 1 (FuxiCTR/BARS)
    every stale epoch decays the learning rate, with 2 every second one in a row, and so on.
    """
    if auc > state["best_auc"]:
        state.update(best_auc=auc, stale_epochs=0)
        return Plateau.IMPROVED
    state["stale_epochs"] += 1
    return Plateau.DECAY if state["stale_epochs"] % lr_decay_patience == 0 else Plateau.STALE


def model_spec(cfg: CTRConfig, variant: Variant, vocab: FieldVocab, num_items: int, train: SplitTensors,
               table: torch.Tensor | None) -> CTRModelSpec:
    """The model a variant trains: its ID fields, the LLM inputs' shape when it reads them (``train.codes`` (N, K'),
    ``table`` (V, D)) and the backbone and aggregation settings of ``cfg``."""
    use_llm = table is not None
    return CTRModelSpec(
        variant=variant.value,
        field_names=list(vocab.field_names),
        field_vocab_sizes=vocab.sizes,
        use_llm=use_llm,
        llm_features=int(train.codes.shape[1]) if use_llm else 0,
        llm_dim=int(table.shape[1]) if use_llm else 0,
        num_items=num_items,
        backbone=asdict(cfg.backbone),
        agg_dim=cfg.agg_dim,
        agg_layers=cfg.agg_layers,
        agg_heads=cfg.agg_heads,
        agg_dropout=cfg.agg_dropout,
        llm_input_scale=cfg.llm_input_scale,
        history=cfg.history.value,
    )


def train_variant(config: TrainConfig, dataset: Dataset, variant: Variant, out: Path, llm: LLMFeatures | None,
                  vocab: FieldVocab, ctx: DistContext, resume: bool, history: dict[str, np.ndarray] | None = None) -> dict:
    """Train one variant into ``RunLayout.ctr_dir(variant)``: set up -> epochs (:func:`train_epochs`) -> restore the
    best epoch's weights, score and save (:func:`finish_variant`). ``history``: split -> (N, L) item field indices of
    the selected history events (see :func:`history_items`)."""
    cfg = config.ctr
    stage_dir = RunLayout(out).ctr_dir(variant)
    data = {
        split: split_tensors(vocab, rows, None if llm is None else llm.codes[split], None if history is None else history[split])
        for split, rows in dataset.splits.items()
    }
    table = None if llm is None else llm.table
    spec = model_spec(cfg, variant, vocab, dataset.info.num_items, data["train"], table)
    seed_everything(config.seed)  # the initial weights are a function of the seed alone
    model = LarrCTR(spec, None if llm is None else llm.item_embeddings)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    state = {"best_auc": -1.0, "best_state": None, "stale_epochs": 0, "history": []}
    start_step = 0
    if resume and (stage_dir / "checkpoint.pt").exists():
        start_step, state = load_checkpoint(stage_dir, model, optimizer)
    step = train_epochs(config, variant, model, optimizer, data, table, state, start_step, stage_dir, ctx)
    return finish_variant(cfg, model, optimizer, vocab, data, table, state, step, stage_dir, ctx)


def train_epochs(config: TrainConfig, variant: Variant, model: LarrCTR, optimizer: torch.optim.Optimizer,
                 data: dict[str, SplitTensors], table: torch.Tensor | None, state: dict, start_step: int,
                 stage_dir: Path, ctx: DistContext) -> int:
    """Steps from ``start_step`` until ``ctr.max_epochs`` passes or ``ctr.patience`` stale epochs, validating after
    each epoch (``state`` keeps the best weights and the history) and checkpointing every ``ctr.checkpoint_every``
    steps; returns the number of steps done."""
    cfg = config.ctr
    train = data["train"]
    steps_per_epoch = math.ceil(len(train.labels) / cfg.batch_size)
    max_steps = cfg.max_epochs * steps_per_epoch
    align_weight = 0.0 if variant is Variant.NO_ALIGNMENT else cfg.align_weight
    ddp_model = wrap_ddp(model, ctx)
    logger = StepLogger(stage_dir, ctx, resume_from_step=start_step)
    bar = progress(max_steps, start_step, f"stage 3 {variant}", ctx)
    model.train()
    step = start_step
    while step < max_steps and state["stale_epochs"] < cfg.patience:
        losses = train_step(config, model, ddp_model, optimizer, train, table, step, align_weight, ctx)
        step += 1
        logger.log(step, **losses)
        bar.update(1)
        if step % steps_per_epoch == 0 or step == max_steps:
            valid_auc = validate_epoch(cfg, model, optimizer, data["valid"], table, state, step)
            bar.set_postfix(valid_auc=f"{valid_auc:.4f}")
        if ctx.is_main and (step % cfg.checkpoint_every == 0):
            save_checkpoint(stage_dir, step, model, optimizer, state)
    bar.close()
    return step


def train_step(config: TrainConfig, model: LarrCTR, ddp_model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               train: SplitTensors, table: torch.Tensor | None, step: int, align_weight: float,
               ctx: DistContext) -> dict[str, float]:
    """One optimiser step on the global batch of ``step`` (this rank's share through ``ddp_model``, the wrapper of
    ``model``); returns the losses to log: the total (mean over ranks), BCE and alignment."""
    cfg = config.ctr
    use_llm = table is not None
    seed_step(config.seed, step)
    batch = batch_indices(step, len(train.labels), cfg.batch_size, config.seed)  # (B,) the global batch
    rows = torch.from_numpy(ctx.shard(batch))  # (B / world_size,) this rank's rows
    dropped = (scene_dropout_mask(config.seed, step, len(batch), int(train.codes.shape[1]), cfg.scene_dropout)
               if use_llm else None)  # (B, K') or None
    output = forward_rows(ddp_model, train, rows, table, None if dropped is None else ctx.shard(dropped))
    bce = F.binary_cross_entropy_with_logits(output.logits, train.labels[rows])
    # the alignment's in-batch negatives span the global batch (ctx.gather_rows), like one process's
    align = (alignment_loss(ctx.gather_rows(output.aligned), ctx.gather_rows(output.collaborative), cfg.align_temperature)
             if use_llm else torch.zeros(()))
    loss = bce + align_weight * align + model.backbone.regularization()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return {"loss": ctx.all_reduce_mean(loss).item(), "bce": bce.item(), "align": align.item()}


def validate_epoch(cfg: CTRConfig, model: LarrCTR, optimizer: torch.optim.Optimizer, valid: SplitTensors,
                   table: torch.Tensor | None, state: dict, step: int) -> float:
    """Score the valid split after an epoch: keep the weights of a new best, decay the learning rate on a plateau
    (see :func:`record_validation`); returns the epoch's validation AUC."""
    # every rank holds identical weights, so every rank reaches the same early-stopping decision
    metrics = ctr_metrics(valid.users, valid.labels.numpy(), predict(model, valid, table))
    state["history"].append({"step": step, **metrics})
    outcome = record_validation(state, metrics["auc"], cfg.lr_decay_patience)
    if outcome is Plateau.IMPROVED:
        state["best_state"] = {k: v.clone() for k, v in model.state_dict().items()}
    elif outcome is Plateau.DECAY:
        for group in optimizer.param_groups:  # FuxiCTR/BARS: decay on plateau, keep going
            group["lr"] *= cfg.lr_decay_on_plateau
    return metrics["auc"]


def finish_variant(cfg: CTRConfig, model: LarrCTR, optimizer: torch.optim.Optimizer, vocab: FieldVocab,
                   data: dict[str, SplitTensors], table: torch.Tensor | None, state: dict, step: int,
                   stage_dir: Path, ctx: DistContext) -> dict:
    """Restore the best epoch's weights, score the test split (unless ``ctr.read_test`` is off) and, on rank 0,
    write the checkpoint, the model and ``result.json``; returns the result."""
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    # model selection (cfg.read_test false) never scores the test split: its result has validation numbers only
    test = (ctr_metrics(data["test"].users, data["test"].labels.numpy(), predict(model, data["test"], table))
            if cfg.read_test else {})
    result = {**test, "best_valid_auc": state["best_auc"], "steps": step, "history": state["history"]}
    if ctx.is_main:
        save_checkpoint(stage_dir, step, model, optimizer, state)
        model.save(stage_dir, vocab.to_dict())
        atomic_write_text(stage_dir / RESULT_FILE, json.dumps(result, indent=2) + "\n")
    return result


def run(config: TrainConfig, out: Path, resume: bool = False) -> dict:
    """Train every configured variant; returns ``{variant: {"auc", "logloss", "gauc", ...}}``."""
    ctx = init_distributed()
    layout = RunLayout(out)
    cfg = config.ctr  # its variants are Variant members (CTRConfig checks the names)
    dataset = load_dataset(config.data)
    vocab = fit_vocab(dataset)
    selected = history_items(config, dataset)
    history = None if selected is None else {
        split: history_field_indices(vocab, items, dataset.info.num_items) for split, items in selected.items()
    }
    features_by_source: dict[tuple[Variant, bool], LLMFeatures] = {}
    results = {}
    for variant in cfg.variants:
        done = layout.ctr_dir(variant) / RESULT_FILE
        if resume and done.exists():
            results[variant] = json.loads(done.read_text())
            continue
        llm = None
        if variant.uses_llm:
            key = (variant.embedder_source, variant.whole_scene)
            if key not in features_by_source:
                embedder, tokenizer = load_frozen_embedder(layout.root, variant.embedder_source, cfg.embedder)
                features_by_source[key] = build_llm_features(dataset, embedder, tokenizer, key[1], cfg.embed_batch_size, ctx)
            llm = features_by_source[key]
        results[variant] = train_variant(config, dataset, variant, layout.root, llm, vocab, ctx, resume, history)
    ctx.barrier()
    return {variant.value: {k: v for k, v in result.items() if k != "history"} for variant, result in results.items()}


train = run  # stage 3 as ``larr train ctr`` runs it: every configured variant


def main(argv: list[str] | None = None) -> int:
    return stage_main(Stage.CTR, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
