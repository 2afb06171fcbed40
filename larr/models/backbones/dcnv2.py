"""DCN-V2 (Wang et al., 2021) in its parallel form: a full-rank cross network beside an MLP."""

from __future__ import annotations

import torch
from torch import nn

from larr.models.backbone_config import BackboneConfig, BackboneKind
from larr.models.backbones.base import Backbone
from larr.models.layers import MLP, CrossNetV2


class DCNv2Backbone(Backbone):
    """DCN-V2, parallel form: [cross net (B, D) ‖ MLP (B, H)] → Linear → (B,) logits, D = F*E + dense_dim.

    Either tower may be absent (``cross_layers=0`` or ``mlp_hidden=()``), not both.

    Example::

        config = BackboneConfig(kind="dcnv2", embedding_dim=4, cross_layers=2, mlp_hidden=(16,))
        model = DCNv2Backbone([6, 9, 4], dense_dim=5, config=config)
        model(torch.tensor([[1, 0, 3], [5, 8, 0]]), torch.randn(2, 5))  # (2,)
    """

    kind = BackboneKind.DCNV2

    def build_towers(self, config: BackboneConfig) -> None:
        # deep is registered before cross: reset_parameters draws in registration order
        self.deep = MLP(self.input_dim, config.mlp_hidden, config.dropout, config.batch_norm) if config.mlp_hidden else None
        self.cross = CrossNetV2(self.input_dim, config.cross_layers) if config.cross_layers else None
        head_in = (self.input_dim if self.cross is not None else 0) + (config.mlp_hidden[-1] if self.deep is not None else 0)
        self.head = nn.Linear(head_in, 1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None,
                history: torch.Tensor | None = None) -> torch.Tensor:
        _, _, x = self.features(sparse, dense, history)
        parts = []
        if self.cross is not None:
            parts.append(self.cross(x))  # (B, D)
        if self.deep is not None:
            parts.append(self.deep(x))  # (B, H)
        return self.head(torch.cat(parts, dim=1)).squeeze(1)  # (B,)
