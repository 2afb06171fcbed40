"""Structured pruning of a TextEmbedder's Llama/Qwen2-style encoder: the widths schedule, channel importance, and
the narrower model itself (``larr train distill``, training/distill.py).

Three widths shrink together, each to its own top-importance channels:

* **hidden** (H): the residual stream, shared by every layer: token-embedding columns, every RMSNorm weight,
  the input columns of q/k/v/gate/up, the output rows of o/down, and the input columns of the projection head.
* **intermediate** (I): per layer, rows of gate/up and columns of down. Dropping channel j is exactly zeroing it
  (silu(0) * up = 0), so the narrower MLP computes what the wide one computes with those channels zeroed.
* **projection head**: its inner width is H too (TextEmbedder builds ``Linear(H, H) -> GELU -> Linear(H, D)``, and
  the loader rebuilds it from H), so its inner units are cut to H' as well, by their own importance.
* **query heads**: per layer, whole heads, the same number in every key/value group so that grouped-query attention
  still maps query head i to key/value head i // heads_per_group; key/value heads and head_dim stay (RoPE pairs the
  dims of a head, so head_dim is not cut). Dropping a head is exactly zeroing its o_proj columns.

Hidden channels are not an exact identity: RMSNorm divides by the root mean square over the H channels kept, so the
survivors' scale changes a little; the distillation that follows each pruning step absorbs it.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass

import torch

from larr.models.embedder import TextEmbedder

LAYER = re.compile(r"^layers\.(\d+)\.")


@dataclass(frozen=True)
class Widths:
    """The three widths pruning changes."""

    hidden: int  # H
    intermediate: int  # I
    heads_per_group: int  # query heads per key/value head


def widths_of(embedder: TextEmbedder) -> Widths:
    config = embedder.encoder.config
    return Widths(config.hidden_size, config.intermediate_size,
                  config.num_attention_heads // config.num_key_value_heads)


def scaled_width(full: int, fraction: float) -> int:
    """``full * fraction`` rounded half up (not Python's round-half-even), at least 1."""
    return max(1, math.floor(full * fraction + 0.5))


def width_schedule(full: Widths, ratio: float, prune_steps: int) -> list[Widths]:
    """The widths after pruning step k = 1..prune_steps: each width is ``full * (1 - (1 - ratio) * k / prune_steps)``
    rounded half up, so equal steps in between and ``full * ratio`` at the end. E.g. hidden 64, ratio 0.5, 4 steps:
    56, 48, 40, 32."""
    fractions = [1.0 - (1.0 - ratio) * k / prune_steps for k in range(1, prune_steps + 1)]
    return [Widths(scaled_width(full.hidden, f), scaled_width(full.intermediate, f), scaled_width(full.heads_per_group, f))
            for f in fractions]


# --------------------------------------------------------------------------------------------- importance


class ImportanceTracker:
    """Per-weight importance, summed over the steps since the last pruning step.

    ``taylor``: |w * dL/dw| after each backward (the first-order estimate of the loss change when w is zeroed; the
    sensitivity HomoDistil prunes by). ``magnitude``: |w| at the pruning step (needs no gradients).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self.sums: dict[str, torch.Tensor] = {}

    def accumulate(self, embedder: TextEmbedder) -> None:
        """Call after ``backward`` (before gradients are clipped or zeroed)."""
        if self.kind != "taylor":
            return
        for name, weight in embedder.named_parameters():
            if weight.grad is None:
                continue
            score = (weight.detach() * weight.grad.detach()).abs()
            self.sums[name] = self.sums[name] + score if name in self.sums else score

    def scores(self, embedder: TextEmbedder) -> dict[str, torch.Tensor]:
        """Per-weight scores, shaped like the parameters (for ``taylor``, those seen since the last reset)."""
        if self.kind == "taylor":
            if not self.sums:
                raise ValueError("no gradients accumulated since the last pruning step (taylor importance needs them)")
            return dict(self.sums)
        return {name: weight.detach().abs() for name, weight in embedder.named_parameters()}

    def reset(self) -> None:
        self.sums = {}


@dataclass(frozen=True)
class ChannelScores:
    hidden: torch.Tensor  # (H,)
    intermediate: list[torch.Tensor]  # per layer (I,)
    heads: list[torch.Tensor]  # per layer (num_attention_heads,)
    projection: torch.Tensor | None = None  # (H,): the projection head's inner units (None without a head)


def channel_scores(embedder: TextEmbedder, weight_scores: dict[str, torch.Tensor]) -> ChannelScores:
    """Sum per-weight scores (named as ``embedder.named_parameters``) over the weights of each prunable channel."""
    config = embedder.encoder.config
    layers, head_dim = config.num_hidden_layers, _head_dim(config)
    hidden = torch.zeros(config.hidden_size)
    intermediate = [torch.zeros(config.intermediate_size) for _ in range(layers)]
    heads = [torch.zeros(config.num_attention_heads) for _ in range(layers)]
    projection = None if embedder.projection_dim is None else torch.zeros(config.hidden_size)
    for name, score in weight_scores.items():
        name = name.removeprefix("encoder.")
        if name == "projection.0.weight":  # (H_inner, H)
            hidden += score.sum(dim=0)
            projection += score.sum(dim=1)
            continue
        if name == "projection.0.bias":
            projection += score
            continue
        if name == "projection.2.weight":  # (D, H_inner)
            projection += score.sum(dim=0)
            continue
        if name.startswith("projection."):
            continue
        kind = _kind(name)
        layer = int(LAYER.match(name).group(1)) if LAYER.match(name) else None
        if kind == "embedding":
            hidden += score.sum(dim=0)  # (V, H)
        elif kind == "norm":
            hidden += score  # (H,)
        elif kind in ("q", "k", "v", "gate", "up"):
            if score.dim() == 2:
                hidden += score.sum(dim=0)  # (out, H)
            if kind == "q":
                heads[layer] += score.reshape(config.num_attention_heads, head_dim, -1).sum(dim=(1, 2))
            if kind in ("gate", "up"):
                intermediate[layer] += score.sum(dim=1) if score.dim() == 2 else score
        elif kind == "o":
            if score.dim() == 2:  # (H, heads * head_dim)
                hidden += score.sum(dim=1)
                heads[layer] += score.reshape(config.hidden_size, config.num_attention_heads, head_dim).sum(dim=(0, 2))
            else:  # bias (H,)
                hidden += score
        elif kind == "down":
            if score.dim() == 2:  # (H, I)
                hidden += score.sum(dim=1)
                intermediate[layer] += score.sum(dim=0)
            else:
                hidden += score
    return ChannelScores(hidden, intermediate, heads, projection)


# --------------------------------------------------------------------------------------------- selection and slicing


@dataclass(frozen=True)
class KeptChannels:
    """Indices kept, ascending (query heads: ascending within each key/value group, groups in order)."""

    hidden: torch.Tensor  # (H',)
    intermediate: list[torch.Tensor]  # per layer (I',)
    heads: list[torch.Tensor]  # per layer (groups * heads_per_group',)
    projection: torch.Tensor | None = None  # (H',): the projection head's inner units (None: the first H')


def top_channels(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` highest scores, ascending (ties: the lower index wins)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return torch.tensor(sorted(order[:count]), dtype=torch.long)


def select_channels(scores: ChannelScores, widths: Widths, groups: int) -> KeptChannels:
    """The top-scoring channels at ``widths``; query heads picked within each of the ``groups`` key/value groups."""
    def heads_kept(layer_scores: torch.Tensor) -> torch.Tensor:
        per_group = len(layer_scores) // groups
        return torch.cat([g * per_group + top_channels(layer_scores[g * per_group : (g + 1) * per_group], widths.heads_per_group)
                          for g in range(groups)])

    return KeptChannels(
        hidden=top_channels(scores.hidden, widths.hidden),
        intermediate=[top_channels(s, widths.intermediate) for s in scores.intermediate],
        heads=[heads_kept(s) for s in scores.heads],
        projection=None if scores.projection is None else top_channels(scores.projection, widths.hidden),
    )


def prune_embedder(embedder: TextEmbedder, kept: KeptChannels) -> TextEmbedder:
    """A new, narrower TextEmbedder holding the ``kept`` channels' weights (``embedder`` is left as it was)."""
    encoder = embedder.encoder
    config = copy.deepcopy(encoder.config)
    head_dim = _head_dim(config)
    groups = config.num_key_value_heads
    config.head_dim = head_dim  # stays: the narrower hidden size no longer determines it
    config.hidden_size = len(kept.hidden)
    config.intermediate_size = len(kept.intermediate[0])
    config.num_attention_heads = len(kept.heads[0])
    if config.num_attention_heads % groups:
        raise ValueError(f"{config.num_attention_heads} query heads do not split into {groups} key/value groups")
    h = kept.hidden
    state = {}
    for name, weight in encoder.state_dict().items():
        kind = _kind(name)
        match = LAYER.match(name)
        layer = int(match.group(1)) if match else None
        if kind in ("q", "o"):
            rows = (kept.heads[layer][:, None] * head_dim + torch.arange(head_dim)).flatten()  # (heads' * head_dim,)
        if kind == "embedding":
            weight = weight[:, h]
        elif kind == "norm":
            weight = weight[h]
        elif kind == "q":
            weight = weight[rows][:, h] if weight.dim() == 2 else weight[rows]
        elif kind in ("k", "v"):
            weight = weight[:, h] if weight.dim() == 2 else weight
        elif kind == "o":
            weight = weight[h][:, rows] if weight.dim() == 2 else weight[h]
        elif kind in ("gate", "up"):
            weight = weight[kept.intermediate[layer]][:, h] if weight.dim() == 2 else weight[kept.intermediate[layer]]
        elif kind == "down":
            weight = weight[h][:, kept.intermediate[layer]] if weight.dim() == 2 else weight[h]
        state[name] = weight.clone()
    narrow = type(encoder)(config).to(dtype=next(encoder.parameters()).dtype)
    narrow.load_state_dict(state)
    student = TextEmbedder(narrow, embedder.projection_dim)
    if embedder.projection_dim is not None:
        inner = kept.projection if kept.projection is not None else torch.arange(len(h))
        projection = dict(embedder.projection.state_dict())
        projection["0.weight"] = projection["0.weight"][inner][:, h]  # (H, H) -> (H', H')
        projection["0.bias"] = projection["0.bias"][inner]
        projection["2.weight"] = projection["2.weight"][:, inner]  # (D, H) -> (D, H')
        student.projection.load_state_dict({k: v.clone() for k, v in projection.items()})
    return student.train(embedder.training)


def prune_in_one_shot(embedder: TextEmbedder, ratio: float) -> TextEmbedder:
    """``embedder`` cut to ``ratio`` of its widths in one step by weight magnitude, without distillation: the
    widths (and so the cost) of what ``larr train distill --width-ratio ratio`` makes, for timing a random-weight
    shape (benchmarks/studies/embedder-cost/distill_speed.py, ``larr bench --embedder-width-ratio``)."""
    (final,) = width_schedule(widths_of(embedder), ratio, 1)
    scores = channel_scores(embedder, ImportanceTracker("magnitude").scores(embedder))
    return prune_embedder(embedder, select_channels(scores, final, groups=embedder.encoder.config.num_key_value_heads))


def zero_channels_(embedder: TextEmbedder, intermediate: list[torch.Tensor], heads: list[torch.Tensor]) -> None:
    """Zero, in place, the MLP channels and query heads *not* listed: the wide model that a pruned one reproduces
    exactly (what the tests compare)."""
    config = embedder.encoder.config
    head_dim = _head_dim(config)
    with torch.no_grad():
        for layer, block in enumerate(embedder.encoder.layers):
            dropped = torch.ones(config.intermediate_size, dtype=torch.bool)
            dropped[intermediate[layer]] = False
            block.mlp.gate_proj.weight[dropped] = 0.0
            dropped_heads = torch.ones(config.num_attention_heads, dtype=torch.bool)
            dropped_heads[heads[layer]] = False
            columns = dropped_heads.repeat_interleave(head_dim)  # (heads * head_dim,)
            block.self_attn.o_proj.weight[:, columns] = 0.0


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


_MODULES = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
    "gate_proj": "gate", "up_proj": "up", "down_proj": "down",
}


def _kind(name: str) -> str:
    """Which rule slices the encoder tensor ``name``; an unknown tensor is an error (an architecture this module does
    not know: slicing it wrongly would go unnoticed)."""
    if name.endswith("embed_tokens.weight"):
        return "embedding"
    if name.endswith("norm.weight"):  # input_layernorm, post_attention_layernorm and the final norm
        return "norm"
    module = name.rsplit(".", 2)[-2]
    if module in _MODULES:
        return _MODULES[module]
    raise ValueError(f"cannot prune {name!r}: not a tensor of a Llama/Qwen2-style decoder")
