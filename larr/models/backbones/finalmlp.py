"""FinalMLP (Mao et al., AAAI 2023): two MLP streams over context-gated inputs, fused bilinearly.

As BARS ran it (``ranking/ctr/FinalMLP/FinalMLP_frappe_x1`` in reczoo/BARS, FuxiCTR 2.0.1); the recipe is
``training/configs/frappe_finalmlp.yaml``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from larr.models.backbone_config import BackboneConfig, BackboneKind
from larr.models.backbones.base import Backbone
from larr.models.layers import MLP, FeatureGate, InteractionAggregation


class FinalMLPBackbone(Backbone):
    """FinalMLP: two MLP streams over context-gated copies of x, fused by multi-head bilinear aggregation → (B,).

    Each stream ``s`` reads ``x * gate_s`` (B, D), D = F*E + dense_dim, where ``gate_s`` = 2·sigmoid(MLP(the
    embeddings of the ``fs{s}_context`` fields)) (B, D) — or of a learned constant when no field is named; with
    ``fs_dense`` the gate MLP also reads the dense inputs (B, dense_dim), LARR's scene among them. Its own
    small context tables (one :class:`FieldEmbedding` per stream over the named fields) follow FuxiCTR, which gives the
    gate inputs embeddings apart from the towers'. The streams' outputs (B, H1) and (B, H2) are fused by
    :class:`InteractionAggregation`.

    Example::

        config = BackboneConfig(kind="finalmlp", embedding_dim=4, mlp_hidden=(16,), mlp2_hidden=(8,),
                                fs1_context=("user",), num_heads=2)
        model = FinalMLPBackbone([6, 9, 4], dense_dim=0, config=config, field_names=["user", "item", "weather"])
        model(torch.tensor([[1, 0, 3], [5, 8, 0]]))  # (2,)
    """

    kind = BackboneKind.FINALMLP

    def build_towers(self, config: BackboneConfig) -> None:
        self.deep = MLP(self.input_dim, config.mlp_hidden, config.dropout, config.batch_norm)
        self.deep2 = MLP(self.input_dim, config.mlp2_hidden, config.dropout, config.batch_norm)
        gate_dense = self.dense_dim if config.fs_dense else 0
        self.gate1 = FeatureGate(self._context_fields(config.fs1_context), self.field_vocab_sizes,
                                 config.embedding_dim, config.fs_hidden, self.input_dim, gate_dense)
        self.gate2 = FeatureGate(self._context_fields(config.fs2_context), self.field_vocab_sizes,
                                 config.embedding_dim, config.fs_hidden, self.input_dim, gate_dense)
        self.fusion = InteractionAggregation(config.mlp_hidden[-1], config.mlp2_hidden[-1], config.num_heads)

    def _context_fields(self, names: Sequence[str]) -> list[int]:
        if names and self.field_names is None:
            raise ValueError("a finalmlp gate context names fields: build the backbone with field_names")
        unknown = [n for n in names if n not in (self.field_names or [])]
        if unknown:
            raise ValueError(f"finalmlp gate context {unknown} is not a field; fields: {self.field_names}")
        return [self.field_names.index(n) for n in names]

    def reset_parameters(self) -> None:
        super().reset_parameters()  # the gates' and streams' Linears: Xavier-normal
        self.gate1.reset_parameters()  # context tables std 1e-4 (or the zero constant)
        self.gate2.reset_parameters()
        self.fusion.reset_parameters()

    def regularization(self) -> torch.Tensor:
        """The base L2 over :attr:`embedding` plus the same L2 over both gates' context tables (FuxiCTR puts every
        ``nn.Embedding`` under ``embedding_regularizer``)."""
        total = super().regularization()
        lam = self.config.embedding_l2
        if lam == 0:
            return total
        for gate in (self.gate1, self.gate2):
            if gate.context is None:
                continue
            if self.config.embedding_l2_scope == "table":
                total = total + 0.5 * lam * gate.context.weight.pow(2).sum()
            elif gate.last_rows is not None:
                total = total + 0.5 * lam * gate.context.weight[torch.unique(gate.last_rows)].pow(2).sum()
        return total

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None,
                history: torch.Tensor | None = None) -> torch.Tensor:
        _, _, x = self.features(sparse, dense, history)  # x: (B, D)
        stream1 = self.deep(x * self.gate1(sparse, dense))  # (B, H1)
        stream2 = self.deep2(x * self.gate2(sparse, dense))  # (B, H2)
        return self.fusion(stream1, stream2)  # (B,)
