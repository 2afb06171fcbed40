"""The small arch modules the CTR backbones are built from (torchrec's "arch" modules), each (B, ...) in, (B, ...) out.

* :class:`FieldEmbedding` — every field's embedding in one table: (B, F) indices → (B, F, E);
* :class:`MLP` — the deep tower: (B, D) → (B, H);
* :class:`CrossNetV2` — DCN-V2's full-rank cross network: (B, D) → (B, D);
* :class:`FactorizationMachine` — the FM pairwise term: (B, F, E) → (B,);
* :class:`TargetAttention` — DIN-style attention of the candidate over a history: (B, E), (B, L, E) → (B, E);
* :class:`FeatureGate`, :class:`InteractionAggregation` — FinalMLP's context gate (→ (B, D)) and two-stream fusion
  (→ (B,)).

They follow FuxiCTR v1.1 (the BARS benchmark code): MLP blocks are Linear → [BatchNorm] → ReLU → Dropout, the
cross layers are ``x_{l+1} = x_0 * (W x_l + b) + x_l``, embeddings start at std 1e-4.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class FieldEmbedding(nn.Module):
    """All ``F`` fields' embeddings in one table, so a batch is one gather: (B, F) indices → (B, F, E).

    Field ``f`` owns rows ``[offset_f, offset_f + size_f)``; :meth:`rows` maps per-field indices to table rows
    and ``forward`` looks rows up. Its only state is ``weight`` (the ``offsets``/``sizes`` buffers are not
    saved), so a backbone's ``embedding.weight`` key is the same as an ``nn.Embedding``'s.

    Example::

        emb = FieldEmbedding([6, 9, 4], dim=8)
        rows = emb.rows(torch.tensor([[1, 0, 3]]))  # (1, 3): [[1, 6, 18]]
        vectors = emb(rows)  # (1, 3, 8)
    """

    def __init__(self, field_vocab_sizes: Sequence[int], dim: int):
        super().__init__()
        sizes = [int(s) for s in field_vocab_sizes]
        self.register_buffer("offsets", torch.tensor([0, *np.cumsum(sizes)[:-1]], dtype=torch.long), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.weight = nn.Parameter(torch.empty(sum(sizes), dim))
        nn.init.normal_(self.weight, std=1e-4)

    def rows(self, sparse: torch.Tensor) -> torch.Tensor:
        """(B, F) per-field indices → (B, F) int64 table rows; an index outside its field reads the field's row 0."""
        sparse = sparse.long()
        # An exported graph cannot raise on bad ids (Backbone checks them only in eager mode): send them to the
        # unseen row rather than let them read another field's rows.
        sparse = torch.where((sparse >= 0) & (sparse < self.sizes), sparse, torch.zeros_like(sparse))
        return sparse + self.offsets

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(...) table rows from :meth:`rows` → (..., E)."""
        return F.embedding(rows, self.weight)

    def extra_repr(self) -> str:
        return f"fields={self.sizes.numel()}, rows={self.weight.shape[0]}, dim={self.weight.shape[1]}"


class MLP(nn.Sequential):
    """FuxiCTR's deep tower: Linear → [BatchNorm1d] → ReLU → [Dropout] per hidden size; (B, D) → (B, hidden[-1]).

    Example::

        MLP(12, (16, 8), dropout=0.1, batch_norm=True)(torch.randn(4, 12))  # (4, 8)
    """

    def __init__(self, input_dim: int, hidden: Sequence[int], dropout: float, batch_norm: bool):
        layers: list[nn.Module] = []
        for size in hidden:
            layers.append(nn.Linear(input_dim, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            input_dim = size
        super().__init__(*layers)


class CrossNetV2(nn.Module):
    """DCN-V2 full-rank cross network: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``; (B, D) → (B, D).

    Example::

        CrossNetV2(12, num_layers=3)(torch.randn(4, 12))  # (4, 12)
    """

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class TargetAttention(nn.Module):
    """DIN-style target attention: the candidate's embedding scores every history event, the softmax-weighted sum
    of the events' embeddings is the candidate-specific interest; (B, E), (B, L, E), (B, L) bool -> (B, E).

    The score of an event is a small MLP on ``[q, k, q - k, q * k]`` (DIN's activation unit). Padded events
    (``valid`` False) get weight exactly 0, so they change nothing; a row with no valid event gives 0.

    Example::

        attend = TargetAttention(8)
        attend(torch.randn(2, 8), torch.randn(2, 5, 8), torch.tensor([[True] * 5, [True, True] + [False] * 3]))  # (2, 8)
    """

    def __init__(self, dim: int, hidden: int = 32):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, query: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        q = query[:, None, :].expand_as(keys)  # (B, L, E)
        scores = self.score(torch.cat([q, keys, q - keys, q * keys], dim=-1)).squeeze(-1)  # (B, L)
        # -1e4 underflows to an exact 0 weight in the softmax; the product zeroes rows with no valid event
        weights = scores.masked_fill(~valid, -1e4).softmax(dim=-1) * valid.to(scores.dtype)  # (B, L)
        return (weights[..., None] * keys).sum(dim=1)  # (B, E)


class FactorizationMachine(nn.Module):
    """The FM's pairwise term ``sum_{i<j} <e_i, e_j>`` over the fields, in O(F·E); (B, F, E) → (B,).

    Example::

        FactorizationMachine()(torch.randn(4, 3, 8))  # (4,)
    """

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        square_of_sum = emb.sum(dim=1).pow(2)  # (B, E)
        sum_of_squares = emb.pow(2).sum(dim=1)  # (B, E)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)


class FeatureGate(nn.Module):
    """FinalMLP's feature selection for one stream: context field embeddings (B, C*E) [‖ dense inputs (B, dense_dim)]
    → MLP → 2·sigmoid → (B, D).

    With no context fields the MLP reads a learned constant (1, E), so without dense inputs the gate is one learned
    vector for all rows.
    """

    def __init__(self, fields: Sequence[int], vocab_sizes: Sequence[int], dim: int, hidden: Sequence[int], out_dim: int,
                 dense_dim: int = 0):
        super().__init__()
        self.register_buffer("fields", torch.tensor(list(fields), dtype=torch.long), persistent=False)
        if fields:
            self.context: FieldEmbedding | None = FieldEmbedding([vocab_sizes[f] for f in fields], dim)
            self.bias = None
        else:
            self.context = None
            self.bias = nn.Parameter(torch.zeros(1, dim))
        self.dense_dim = dense_dim
        in_dim = dim * max(1, len(fields)) + dense_dim
        self.mlp = MLP(in_dim, hidden, dropout=0.0, batch_norm=False)
        self.out = nn.Linear(hidden[-1] if hidden else in_dim, out_dim)
        self.last_rows: torch.Tensor | None = None

    def reset_parameters(self) -> None:
        if self.context is not None:
            nn.init.normal_(self.context.weight, std=1e-4)
        else:
            nn.init.zeros_(self.bias)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F) per-field indices [, (B, dense_dim) dense inputs when built with dense_dim] → (B, D) gate in (0, 2)."""
        if self.context is None:
            inputs = self.bias.expand(sparse.shape[0], -1)  # (B, E)
        else:
            rows = self.context.rows(sparse[:, self.fields])  # (B, C)
            if self.training:
                self.last_rows = rows
            inputs = self.context(rows).flatten(start_dim=1)  # (B, C*E)
        if self.dense_dim:
            inputs = torch.cat([inputs, dense.to(inputs.dtype)], dim=1)  # (B, C*E + dense_dim)
        return 2.0 * torch.sigmoid(self.out(self.mlp(inputs)))


class InteractionAggregation(nn.Module):
    """FinalMLP's fusion of two streams x (B, X) and y (B, Y) into a logit (B,):
    ``w_x·x + w_y·y + Σ_h x_hᵀ W_h y_h``, the bilinear term per head over X/H and Y/H slices.
    """

    def __init__(self, x_dim: int, y_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_x, self.head_y = x_dim // num_heads, y_dim // num_heads
        self.w_x = nn.Linear(x_dim, 1)
        self.w_y = nn.Linear(y_dim, 1)
        # stored (H * X/H * Y/H, 1) like FuxiCTR's, so Xavier-normal draws at the same scale
        self.w_xy = nn.Parameter(torch.empty(num_heads * self.head_x * self.head_y, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.w_xy)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        heads_x = x.view(-1, self.num_heads, self.head_x)  # (B, H, X/H)
        heads_y = y.view(-1, self.num_heads, self.head_y)  # (B, H, Y/H)
        w = self.w_xy.view(self.num_heads, self.head_x, self.head_y)  # (H, X/H, Y/H)
        bilinear = torch.einsum("bhx,hxy,bhy->b", heads_x, w, heads_y)  # (B,)
        return (self.w_x(x) + self.w_y(y)).squeeze(1) + bilinear
