"""DeepFM (Guo et al., 2017): first-order weights + the FM pairwise term + an MLP."""

from __future__ import annotations

import torch
from torch import nn

from larr.models.backbone_config import BackboneConfig, BackboneKind
from larr.models.backbones.base import Backbone
from larr.models.layers import MLP, FactorizationMachine


class DeepFMBackbone(Backbone):
    """DeepFM: first-order weights + FM pairwise term (B, F, E) → (B,), plus the MLP on x → (B,) logits.

    ``first_order`` holds the FM's per-value weights ``w_i``, laid out like :attr:`embedding`; dense features
    enter the linear part through ``dense_linear`` and the MLP through x. Without ``mlp_hidden`` it is a plain FM
    with a global ``bias``.

    Example::

        config = BackboneConfig(kind="deepfm", embedding_dim=4, mlp_hidden=(16,))
        model = DeepFMBackbone([6, 9, 4], dense_dim=0, config=config)
        model(torch.tensor([[1, 0, 3], [5, 8, 0]]))  # (2,)
    """

    kind = BackboneKind.DEEPFM

    def build_towers(self, config: BackboneConfig) -> None:
        self.deep = MLP(self.input_dim, config.mlp_hidden, config.dropout, config.batch_norm) if config.mlp_hidden else None
        self.first_order = nn.Embedding(self.embedding.weight.shape[0], 1)
        self.fm = FactorizationMachine()
        self.dense_linear = nn.Linear(self.dense_dim, 1, bias=False) if self.dense_dim else None
        if self.deep is not None:
            self.head = nn.Linear(config.mlp_hidden[-1], 1)  # its bias is the model's global bias
        else:
            self.bias = nn.Parameter(torch.zeros(1))

    def embedding_tables(self) -> list[nn.Module]:
        return [self.embedding, self.first_order]

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None,
                history: torch.Tensor | None = None) -> torch.Tensor:
        rows, emb, x = self.features(sparse, dense, history)
        logit = self.first_order(rows).sum(dim=(1, 2))  # (B,)
        logit = logit + self.fm(emb)
        if self.dense_linear is not None:
            logit = logit + self.dense_linear(x[:, -self.dense_dim :]).squeeze(1)
        if self.deep is not None:
            return logit + self.head(self.deep(x)).squeeze(1)
        return logit + self.bias
