"""``Backbone``: what every CTR architecture shares — the field embedding, the dense input, the history attention,
input checks, FuxiCTR's initialisation and the embedding L2 term. Each architecture subclasses it
(:mod:`larr.models.backbones`)."""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import nn

from larr.models.backbone_config import BackboneConfig, BackboneKind
from larr.models.layers import FieldEmbedding, TargetAttention


class Backbone(nn.Module):
    """What every architecture shares: the field embedding, the dense input, input checks, init and the L2 term.

    Subclasses (one per :class:`BackboneKind`) add their towers (:meth:`build_towers`) and ``forward``; build one with
    :func:`build_backbone`. Every tower reads ``x`` = flattened field embeddings ‖ dense features,
    (B, F*E + dense_dim), which :meth:`features` returns with the embeddings (B, F, E) and table rows (B, F).
    With ``history_field`` the attention's output (B, E) sits between the two: (B, F*E + E + dense_dim).

    Args:
        field_vocab_sizes: rows of each field's embedding table (row 0 = out-of-vocabulary), e.g.
            :attr:`FieldVocab.sizes`.
        dense_dim: width of the dense input (0: none), e.g. an LLM embedding.
        config: the architecture; its ``kind`` must be the subclass's.
        field_names: the fields' names in order (:attr:`FieldVocab.field_names`); needed where the config names
            fields (FinalMLP's gate contexts).
        history_field: the field whose values a history sequence holds (the item field); ``None``: no history
            input and no attention layer (today's model, parameter for parameter).
    """

    kind: ClassVar[BackboneKind]

    def __init__(
        self,
        field_vocab_sizes: Sequence[int],
        dense_dim: int,
        config: BackboneConfig,
        *,
        field_names: Sequence[str] | None = None,
        history_field: int | None = None,
    ):
        super().__init__()
        sizes = [int(s) for s in field_vocab_sizes]
        if config.kind is not self.kind:
            raise ValueError(f"{type(self).__name__} builds kind '{self.kind}', got a config of kind '{config.kind}'")
        if not sizes:
            raise ValueError(f"{type(self).__name__} needs at least one field")
        if any(s < 1 for s in sizes):
            raise ValueError(f"every field vocabulary needs >= 1 row (row 0 = unseen), got {sizes}")
        if dense_dim < 0:
            raise ValueError(f"dense_dim must be >= 0, got {dense_dim}")
        if field_names is not None and len(field_names) != len(sizes):
            raise ValueError(f"{len(field_names)} field names for {len(sizes)} fields")
        self.field_names = [str(n) for n in field_names] if field_names is not None else None
        self.config = config
        self.field_vocab_sizes = sizes
        self.num_fields = len(sizes)
        self.dense_dim = int(dense_dim)
        self.input_dim = self.num_fields * config.embedding_dim + self.dense_dim
        self.embedding = FieldEmbedding(sizes, config.embedding_dim)
        self.history_field = history_field
        self.target_attention = None
        if history_field is not None:
            if not 0 <= history_field < self.num_fields:
                raise ValueError(f"history_field must be a field index in [0, {self.num_fields}), got {history_field}")
            self.target_attention = TargetAttention(config.embedding_dim)
            self.input_dim += config.embedding_dim
        self._last_rows: torch.Tensor | None = None
        self.build_towers(config)
        self.reset_parameters()

    def build_towers(self, config: BackboneConfig) -> None:
        """Register the architecture's towers (each subclass's one method of set-up); ``input_dim`` is known."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """FuxiCTR's initialisation: tiny embeddings (the towers start near-linear), Xavier-normal Linear layers.

        ``__init__`` calls it after :meth:`build_towers`; it draws in table order, then in Linear registration order,
        which is what makes a seed give the weights of checkpoints saved before the per-kind classes.
        """
        for table in self.embedding_tables():
            nn.init.normal_(table.weight, std=1e-4)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def embedding_tables(self) -> list[nn.Module]:
        """The tables :meth:`regularization` covers, each with a ``weight`` laid out like :attr:`embedding`'s."""
        return [self.embedding]

    def _check_inputs(self, sparse: torch.Tensor, dense: torch.Tensor | None) -> None:
        if torch.jit.is_tracing():  # ONNX export: the graph cannot raise, and reading shapes here would warn
            return
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return  # a CUDA graph capture cannot read a value back (bad.any()); its warm-up runs checked these shapes
        if sparse.dim() != 2 or sparse.shape[1] != self.num_fields:
            raise ValueError(f"sparse must be (B, {self.num_fields}), got {tuple(sparse.shape)}")
        if sparse.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"sparse must be an integer (int64) tensor, got {sparse.dtype}")
        if self.dense_dim:
            if dense is None:
                raise ValueError(
                    f"this backbone has dense_dim={self.dense_dim}: pass dense of shape (B, {self.dense_dim})"
                )
            if dense.dim() != 2 or dense.shape[0] != sparse.shape[0] or dense.shape[1] != self.dense_dim:
                raise ValueError(f"dense must be ({sparse.shape[0]}, {self.dense_dim}), got {tuple(dense.shape)}")
            if not dense.is_floating_point():
                raise ValueError(f"dense must be a float tensor, got {dense.dtype}")
        elif dense is not None and dense.numel() != 0:
            raise ValueError(f"this backbone has dense_dim=0 but got dense of shape {tuple(dense.shape)}")
        if sparse.numel():
            bad = (sparse < 0) | (sparse >= self.embedding.sizes)
            if bool(bad.any()):
                row, col = (int(i) for i in bad.nonzero()[0])
                raise ValueError(
                    f"sparse[{row}, {col}] = {int(sparse[row, col])} is outside field {col}'s vocabulary "
                    f"[0, {self.field_vocab_sizes[col]}) (use 0 for unseen values)"
                )

    def attend_history(self, emb: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """(B, F, E) field embeddings, (B, L) history values of ``history_field`` (vocabulary indices, -1 = padding)
        -> (B, E) the candidate's target attention over its history."""
        if history is None:
            raise ValueError("this backbone has a target-attention layer: pass history (B, L), -1 = padding")
        valid = history >= 0  # (B, L)
        field_sizes = self.embedding.sizes[self.history_field]
        index = torch.where(valid & (history < field_sizes), history, torch.zeros_like(history))
        keys = self.embedding(index + self.embedding.offsets[self.history_field])  # (B, L, E)
        return self.target_attention(emb[:, self.history_field], keys, valid)

    def features(
        self, sparse: torch.Tensor, dense: torch.Tensor | None, history: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Checked inputs → table rows (B, F), embeddings (B, F, E) and the towers' input x (B, F*E [+ E] + dense_dim)."""
        self._check_inputs(sparse, dense)
        rows = self.embedding.rows(sparse)  # (B, F)
        if self.training:
            self._last_rows = rows
        emb = self.embedding(rows)  # (B, F, E)
        x = emb.flatten(start_dim=1)  # (B, F*E)
        if self.target_attention is not None:
            x = torch.cat([x, self.attend_history(emb, history.long() if history is not None else None)], dim=1)
        if self.dense_dim:
            x = torch.cat([x, dense.to(x.dtype)], dim=1)  # (B, F*E + dense_dim)
        return rows, emb, x

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None,
                history: torch.Tensor | None = None) -> torch.Tensor:
        """Score a batch.

        Args:
            sparse: (B, F) int64 per-field indices, 0 = the field's out-of-vocabulary row.
            dense: (B, dense_dim) float features concatenated to the flattened field embeddings before the
                towers; ``None`` when ``dense_dim == 0``.
            history: (B, L) int64 indices of ``history_field`` values, -1 = padding; only with ``history_field``.

        Returns:
            (B,) logits.
        """
        raise NotImplementedError

    def regularization(self) -> torch.Tensor:
        """``embedding_l2 / 2 * sum of squared embedding weights`` (scalar); 0 when ``embedding_l2 == 0``.

        Scope ``"table"`` sums every row of every table (FuxiCTR); ``"batch"`` only the distinct rows of the last
        training-mode forward.
        """
        weight = self.embedding.weight
        lam = self.config.embedding_l2
        if lam == 0:
            return weight.new_zeros(())
        if self.config.embedding_l2_scope == "table":
            total = sum(t.weight.pow(2).sum() for t in self.embedding_tables())
        else:
            if self._last_rows is None:
                raise RuntimeError("regularization() with scope 'batch' needs a training-mode forward first")
            rows = torch.unique(self._last_rows)
            total = sum(t.weight[rows].pow(2).sum() for t in self.embedding_tables())
        return 0.5 * lam * total

    def extra_repr(self) -> str:
        return f"kind={self.kind}, fields={self.num_fields}, dense_dim={self.dense_dim}"
