"""Stage-3 models: the aggregation encoder, the LARR CTR model and its serving form.

Field layout of the ID part (both LARR and the ID-only baseline): ``[user, item, scene_1 … scene_K]``,
each a :class:`~larr.models.field_vocab.FieldVocab` index (0 = unseen). LARR adds, as dense inputs to the
same backbone, the item's static LLM text embedding and the *aligned* scene vector. With ``ctr.history`` on,
the backbone's target attention reads a selected sub-sequence of the user's history (item field indices,
-1 = padding); that is a training / offline-evaluation option for now: the serving forms refuse such a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from larr.data.subsequence import HistoryMode
from larr.models.backbone_config import BackboneConfig
from larr.models.backbones import build_backbone

SPEC_FILE = "ctr.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
USER_FIELD, ITEM_FIELD = 0, 1  # positions in the sparse field layout
_MASKED = -1e4  # additive attention mask: finite so FP16 engines (softmax kept in FP32) stay NaN-free


class AttentionBlock(nn.Module):
    """Pre-LayerNorm bidirectional self-attention + MLP (written out so it exports cleanly to ONNX)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"agg_dim {dim} is not divisible by agg_heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attention_bias: torch.Tensor) -> torch.Tensor:
        """x: (B, S, E); attention_bias: (B, 1, 1, S) additive, 0 where a key may be attended."""
        b, s, e = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(e // self.heads) + attention_bias  # (B, H, S, S)
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, s, e)  # (B, S, E)
        x = x + self.dropout(self.out(attended))
        return x + self.dropout(self.mlp(self.norm2(x)))


class AggregationEncoder(nn.Module):
    """Fuses K per-feature LLM embeddings into one scene vector through a leading ``[AGG]`` token.

    Input (B, K, D) embeddings and an optional (B, K) bool mask (True = feature present). Each feature
    is projected to ``dim`` and gets its feature-type embedding; ``[AGG]`` is prepended and never
    masked, so a scene with every feature missing still has a defined output. Returns the ``[AGG]``
    state (B, dim) and its MLP projection into the collaborative space (B, output_dim).
    """

    def __init__(self, num_features: int, input_dim: int, dim: int, layers: int, heads: int, dropout: float, output_dim: int):
        super().__init__()
        self.num_features = num_features
        self.input_proj = nn.Linear(input_dim, dim)
        self.feature_type = nn.Parameter(torch.randn(num_features, dim) * 0.02)
        self.agg_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.to_collaborative = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, output_dim))

    def forward(self, features: torch.Tensor, present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b, k, _ = features.shape
        if k != self.num_features:
            raise ValueError(f"expected {self.num_features} scene features, got {k}")
        tokens = self.input_proj(features) + self.feature_type  # (B, K, E)
        x = torch.cat([self.agg_token.expand(b, -1, -1), tokens], dim=1)  # (B, 1+K, E)
        if present is None:
            bias = x.new_zeros(b, 1, 1, k + 1)
        else:
            keep = torch.cat([present.new_ones(b, 1), present], dim=1)  # (B, 1+K), [AGG] always kept
            bias = (~keep).to(x.dtype).mul(_MASKED).view(b, 1, 1, k + 1)
        for block in self.blocks:
            x = block(x, bias)
        agg = self.norm(x[:, 0])  # (B, E)
        return agg, self.to_collaborative(agg)


@dataclass
class CTRModelSpec:
    """Everything needed to rebuild a :class:`LarrCTR` (saved as ``ctr.json``)."""

    variant: str
    field_names: list[str]
    field_vocab_sizes: list[int]
    use_llm: bool
    llm_features: int = 0  # K for per-feature LARR, 1 for the full-text ablation
    llm_dim: int = 0  # D of the frozen text embeddings
    num_items: int = 0
    backbone: dict = field(default_factory=dict)
    agg_dim: int = 64
    agg_layers: int = 2
    agg_heads: int = 4
    agg_dropout: float = 0.1
    # factor on the dense LLM inputs (item text, aligned scene); < 1 keeps them from drowning out tiny-initialised,
    # L2-regularised ID embeddings (CTRConfig.llm_input_scale)
    llm_input_scale: float = 1.0
    # which history events the backbone's target attention reads (a HistoryMode value); "off": no attention layer
    history: str = HistoryMode.OFF.value

    @property
    def backbone_config(self) -> BackboneConfig:
        return BackboneConfig.from_dict(self.backbone)


class CTROutput(NamedTuple):
    logits: torch.Tensor  # (B,)
    aligned: torch.Tensor | None  # (B, E) scene vector in the collaborative space
    collaborative: torch.Tensor | None  # (B, E) the user's ID embedding (alignment target)


class LarrCTR(nn.Module):
    """LARR's CTR model, or the ID-only baseline when ``spec.use_llm`` is False."""

    def __init__(self, spec: CTRModelSpec, item_text_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.spec = spec
        config = spec.backbone_config
        dense_dim = spec.llm_dim + config.embedding_dim if spec.use_llm else 0
        history_field = None if HistoryMode.parse(spec.history) is HistoryMode.OFF else ITEM_FIELD
        self.backbone = build_backbone(spec.field_vocab_sizes, dense_dim, config, field_names=spec.field_names,
                                       history_field=history_field)
        if spec.use_llm:
            self.aggregator = AggregationEncoder(
                spec.llm_features, spec.llm_dim, spec.agg_dim, spec.agg_layers, spec.agg_heads, spec.agg_dropout,
                output_dim=config.embedding_dim,
            )
            table = torch.zeros(spec.num_items + 1, spec.llm_dim)  # row 0: unknown item
            if item_text_embeddings is not None:
                table[1:] = item_text_embeddings
            self.register_buffer("item_text", table)

    def collaborative_user(self, sparse: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, E): the user field's ID embedding."""
        embedding = self.backbone.embedding
        return embedding(embedding.rows(sparse)[:, USER_FIELD])

    def forward(self, sparse: torch.Tensor, scene: torch.Tensor | None = None, item_rows: torch.Tensor | None = None,
                history: torch.Tensor | None = None) -> CTROutput:
        """sparse (B, F) field indices; scene (B, K', D) frozen per-feature embeddings; item_rows (B,) row of
        ``item_text`` (item id + 1, 0 = unknown); history (B, L) item field indices of the selected history
        events, -1 = padding (only when ``spec.history`` is not off)."""
        if not self.spec.use_llm:
            return CTROutput(self.backbone(sparse, None, history), None, None)
        _, aligned = self.aggregator(scene)  # (B, E)
        dense = torch.cat([self.item_text[item_rows], self.scene_input(aligned)], dim=1)  # (B, D + E)
        dense = dense * self.spec.llm_input_scale
        return CTROutput(self.backbone(sparse, dense, history), aligned, self.collaborative_user(sparse))

    @staticmethod
    def scene_input(aligned: torch.Tensor) -> torch.Tensor:
        """The aligned scene vector as the backbone sees it: unit length, like the other LLM inputs.

        Its direction is what the alignment loss shapes; an unbounded norm let scenes unlike any in
        training (unseen paraphrases) push the CTR head to overconfident probabilities.
        """
        return F.normalize(aligned, dim=-1)

    # ------------------------------------------------------------------------------------ persistence

    def save(self, directory: Path, vocab: dict) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / WEIGHTS_FILE)
        (directory / SPEC_FILE).write_text(json.dumps(asdict(self.spec), indent=2) + "\n", encoding="utf-8")
        (directory / VOCAB_FILE).write_text(json.dumps(vocab) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> tuple["LarrCTR", dict]:
        directory = Path(directory)
        spec = CTRModelSpec(**json.loads((directory / SPEC_FILE).read_text(encoding="utf-8")))
        model = cls(spec)
        model.load_state_dict(load_file(directory / WEIGHTS_FILE))
        vocab = json.loads((directory / VOCAB_FILE).read_text(encoding="utf-8"))
        return model.eval(), vocab


def _lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` with every id outside ``[0, len(table))`` mapped to 0 — never an out-of-range gather."""
    valid = (ids >= 0) & (ids < table.shape[0])
    return torch.where(valid, table[torch.where(valid, ids, torch.zeros_like(ids))], torch.zeros_like(ids))


class ServingCTR(nn.Module):
    """One request: ``(scene_emb (K, D), scene_ids (K,), user_id (1,), item_ids (N,)) -> CTR (N,)``.

    Raw ids are mapped to field indices by baked-in tables (``user_index[id]``, 0 = unseen or out of
    range). The aggregation encoder runs once per request and its vector is shared by the N candidates.
    ``scene_ids`` are the scene features' field indices (the feature cache computes them).
    :class:`BatchedServingCTR` scores many requests in one call with the same weights and arithmetic.
    """

    def __init__(self, model: LarrCTR, user_index: torch.Tensor, item_index: torch.Tensor):
        super().__init__()
        if HistoryMode.parse(model.spec.history) is not HistoryMode.OFF:
            raise NotImplementedError(
                f"ctr.history={model.spec.history} is a training / offline-evaluation option for now: the serving "
                "model has no history input"
            )
        self.model = model
        self.register_buffer("user_index", user_index.long())  # (num_users,)
        self.register_buffer("item_index", item_index.long())  # (num_items,)

    def forward(self, scene_emb: torch.Tensor, scene_ids: torch.Tensor, user_id: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        item_request = torch.zeros_like(item_ids.long())  # (N,): every candidate belongs to request 0
        return self.score(scene_emb[None], scene_ids[None], user_id.reshape(1), item_ids, item_request)

    def score(self, scene_emb: torch.Tensor, scene_ids: torch.Tensor, user_id: torch.Tensor, item_ids: torch.Tensor,
              item_request: torch.Tensor) -> torch.Tensor:
        """B requests, T candidates in all: scene_emb (B, K', D), scene_ids (B, K), user_id (B,), item_ids (T,),
        item_request (T,) the request each candidate belongs to -> CTR (T,)."""
        request = item_request.long()
        user = _lookup(self.user_index, user_id.long())[request]  # (T,)
        item = _lookup(self.item_index, item_ids.long())  # (T,)
        sparse = torch.cat([user[:, None], item[:, None], scene_ids.long()[request]], dim=1)  # (T, F)
        backbone = self.model.backbone
        if not self.model.spec.use_llm:
            return torch.sigmoid(backbone(sparse, None))
        known = (item_ids >= 0) & (item_ids < self.model.spec.num_items)
        item_rows = torch.where(known, item_ids.long() + 1, torch.zeros_like(item_ids.long()))  # (T,)
        _, aligned = self.model.aggregator(scene_emb)  # (B, E): once per request
        scene = self.model.scene_input(aligned)[request]  # (T, E): shared by a request's candidates
        dense = torch.cat([self.model.item_text[item_rows], scene], dim=1)  # (T, D + E)
        dense = dense * self.model.spec.llm_input_scale
        return torch.sigmoid(backbone(sparse, dense))


class BatchedServingCTR(ServingCTR):
    """B requests in one call, each with its own number of candidates (ragged), concatenated:

    ``(scene_emb (B, K', D), scene_ids (B, K), user_id (B, 1), item_ids (T,), item_request (T,)) -> CTR (T,)``

    where ``item_request[t]`` is the request (row of the first three inputs) candidate ``t`` belongs to.
    This is what one execute of the served ``ctr`` model runs for a whole dynamic batch.

        >>> ctr = BatchedServingCTR(model, user_index, item_index)
        >>> ctr(scene_emb, scene_ids, user_id, torch.tensor([5, 7, 9]), torch.tensor([0, 0, 1]))  # 2 + 1 candidates
    """

    def forward(self, scene_emb: torch.Tensor, scene_ids: torch.Tensor, user_id: torch.Tensor, item_ids: torch.Tensor,
                item_request: torch.Tensor) -> torch.Tensor:
        return self.score(scene_emb, scene_ids, user_id.reshape(-1), item_ids, item_request)


def index_table(vocab_values: list, size: int) -> torch.Tensor:
    """Dense ``raw id -> field index`` table for ids ``0..size-1`` from a fitted FieldVocab value list."""
    table = torch.zeros(size, dtype=torch.long)
    for index, value in enumerate(vocab_values, start=1):
        if isinstance(value, int) and 0 <= value < size:
            table[value] = index
    return table


__all__ = ["AggregationEncoder", "BatchedServingCTR", "CTRModelSpec", "CTROutput", "LarrCTR", "ServingCTR", "index_table"]
