"""The CTR backbones, one class per architecture, and :func:`build_backbone`, which picks the class for a config.

The ID part of LARR's stage-3 CTR model: field embeddings (+ dense features) → DCN-V2 / DeepFM / FinalMLP / DNN →
logit. Alone it is the ID-only baseline; LARR feeds the item's LLM text embedding and the aligned scene vector in as
``dense`` features, concatenated to the flattened field embeddings before the towers. With ``history_field`` set, a
:class:`~larr.models.layers.TargetAttention` layer reads a user-history sequence of that field's values (the items
of a selected sub-sequence, ``ctr.history``) with the candidate's embedding as the query; its output joins the
towers' input too. ::

    from larr.models.backbone_config import BackboneConfig
    from larr.models.backbones import build_backbone
    from larr.models.field_vocab import FieldVocab

    vocab = FieldVocab(["user", "item", "weather"]).fit(train_columns)         # 0 = unseen value
    model = build_backbone(vocab.sizes, dense_dim=0, config=BackboneConfig(kind="dcnv2", embedding_l2=0.05))
    logits = model(torch.from_numpy(vocab.transform(batch_columns)), None)   # (B,)
    loss = F.binary_cross_entropy_with_logits(logits, labels) + model.regularization()

Modules: :mod:`.base` (:class:`Backbone`, what every architecture shares), :mod:`.dnn`, :mod:`.dcnv2`,
:mod:`.deepfm`, :mod:`.finalmlp`; the layers they are built from are :mod:`larr.models.layers`.
"""

from __future__ import annotations

from typing import Sequence

from larr.models.backbone_config import BackboneConfig, BackboneKind
from larr.models.backbones.base import Backbone
from larr.models.backbones.dcnv2 import DCNv2Backbone
from larr.models.backbones.deepfm import DeepFMBackbone
from larr.models.backbones.dnn import DNNBackbone
from larr.models.backbones.finalmlp import FinalMLPBackbone

BACKBONES: dict[BackboneKind, type[Backbone]] = {
    BackboneKind.DCNV2: DCNv2Backbone,
    BackboneKind.DEEPFM: DeepFMBackbone,
    BackboneKind.DNN: DNNBackbone,
    BackboneKind.FINALMLP: FinalMLPBackbone,
}


def build_backbone(
    field_vocab_sizes: Sequence[int],
    dense_dim: int,
    config: BackboneConfig,
    *,
    field_names: Sequence[str] | None = None,
    history_field: int | None = None,
) -> Backbone:
    """The :class:`Backbone` subclass for ``config.kind``, e.g. ``build_backbone(vocab.sizes, 0, config)``."""
    return BACKBONES[config.kind](field_vocab_sizes, dense_dim, config, field_names=field_names,
                                  history_field=history_field)


__all__ = [
    "BACKBONES",
    "Backbone",
    "DCNv2Backbone",
    "DNNBackbone",
    "DeepFMBackbone",
    "FinalMLPBackbone",
    "build_backbone",
]
