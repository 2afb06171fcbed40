"""The plain deep model: an MLP over the flattened field embeddings and dense inputs."""

from __future__ import annotations

import torch
from torch import nn

from larr.models.backbone_config import BackboneConfig, BackboneKind
from larr.models.backbones.base import Backbone
from larr.models.layers import MLP


class DNNBackbone(Backbone):
    """Plain deep model: x (B, F*E + dense_dim) → MLP (B, H) → Linear → (B,) logits.

    Example::

        config = BackboneConfig(kind="dnn", embedding_dim=4, mlp_hidden=(16, 8))
        model = DNNBackbone([6, 9, 4], dense_dim=0, config=config)
        model(torch.tensor([[1, 0, 3], [5, 8, 0]]))  # (2,)
    """

    kind = BackboneKind.DNN

    def build_towers(self, config: BackboneConfig) -> None:
        self.deep = MLP(self.input_dim, config.mlp_hidden, config.dropout, config.batch_norm)
        self.head = nn.Linear(config.mlp_hidden[-1], 1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None,
                history: torch.Tensor | None = None) -> torch.Tensor:
        _, _, x = self.features(sparse, dense, history)
        return self.head(self.deep(x)).squeeze(1)  # (B,)
