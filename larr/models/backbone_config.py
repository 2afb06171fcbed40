"""The configuration of LARR's CTR backbone: which architecture (:class:`BackboneKind`) and its sizes.

``ctr.backbone`` in a training config (YAML) and in a run's ``ctr.json`` is a :class:`BackboneConfig`;
:func:`larr.models.backbones.build_backbone` builds the model it describes. No torch here, so a config can be
read, checked and written without it::

    config = BackboneConfig.from_dict({"kind": "deepfm", "embedding_dim": 10, "embedding_l2": 0.05})

``embedding_l2`` follows FuxiCTR's ``embedding_regularizer`` (``fuxictr/pytorch/models/base_model.py``):
``lambda / 2 * ||E||^2`` summed over the **whole** embedding tables and added, unnormalised, to the batch-mean
log loss; ``embedding_l2_scope="batch"`` sums only the distinct rows the last batch looked up (lazy, sparse-style
regularisation, cheaper for very large tables). The BARS Frappe recipes are ``training/configs/frappe.yaml``
(DeepFM) and ``training/configs/frappe_finalmlp.yaml``; their measured AUCs are in the docs, rendered from the
results files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from larr.choices import ChoiceEnum


class BackboneKind(ChoiceEnum):
    """The CTR architecture of a :class:`BackboneConfig`; configs (YAML, ``ctr.json``) spell it by value.

    * ``dcnv2`` — DCN-V2, parallel: full-rank cross network ‖ MLP → linear head (``larr.models.backbones.dcnv2``);
    * ``deepfm`` — first-order weights + FM pairwise term + MLP (``larr.models.backbones.deepfm``);
    * ``finalmlp`` — two MLP streams, each over a context-gated copy of the input, fused by multi-head bilinear
      aggregation (``larr.models.backbones.finalmlp``);
    * ``dnn`` — MLP only (``larr.models.backbones.dnn``).

    A ``str`` subclass, so ``BackboneKind.DNN == "dnn"`` and JSON writes the plain value.
    """

    DCNV2 = "dcnv2"
    DEEPFM = "deepfm"
    DNN = "dnn"
    FINALMLP = "finalmlp"


KINDS = tuple(k.value for k in BackboneKind)
L2_SCOPES = ("table", "batch")


@dataclass
class BackboneConfig:
    """The ID part of the CTR model: field embeddings -> DCN-V2 / DeepFM / DNN -> logit (``ctr.backbone`` in a config).

    (docs/config-reference.md renders the line above.) Every bad value raises ``ValueError`` here, naming the
    field; ``kind`` is normalised to a :class:`BackboneKind` once.
    """

    kind: BackboneKind = field(
        default=BackboneKind.DCNV2,
        metadata={"help": "CTR architecture: 'dcnv2' | 'deepfm' | 'finalmlp' | 'dnn' (a BackboneKind; YAML gives "
                          "the string)"},
    )
    embedding_dim: int = field(default=16, metadata={"help": "size of every field's embedding"})
    cross_layers: int = field(default=3, metadata={"help": "dcnv2: number of full-rank cross layers"})
    mlp_hidden: tuple[int, ...] = field(
        default=(400, 400, 400),
        metadata={"help": "hidden sizes of the deep tower (empty: dcnv2 cross net only); finalmlp: its first stream"},
    )
    mlp2_hidden: tuple[int, ...] = field(
        default=(64, 64, 64), metadata={"help": "finalmlp: hidden sizes of the second stream (FuxiCTR's default)"}
    )
    fs_hidden: tuple[int, ...] = field(
        default=(64,), metadata={"help": "finalmlp: hidden sizes of each stream's feature-gate MLP"}
    )
    fs1_context: tuple[str, ...] = field(
        default=(),
        metadata={"help": "finalmlp: fields whose embeddings drive the first stream's gate, e.g. [user] (empty: a "
                          "learned constant, i.e. a per-input-unit gate shared by all rows)"},
    )
    fs2_context: tuple[str, ...] = field(
        default=(), metadata={"help": "finalmlp: fields whose embeddings drive the second stream's gate, e.g. [item]"}
    )
    fs_dense: bool = field(
        default=False,
        metadata={"help": "finalmlp: both gates also read the dense inputs (LARR: the scaled item-text and aligned "
                          "scene vectors) beside their context fields, so the real-time scene picks what each stream "
                          "sees; ID-only models (no dense inputs) are unchanged"},
    )
    num_heads: int = field(
        default=1,
        metadata={"help": "finalmlp: heads of the bilinear aggregation of the two streams; must divide both streams' "
                          "last sizes"},
    )
    dropout: float = field(default=0.2, metadata={"help": "dropout after every hidden layer of the deep tower"})
    batch_norm: bool = field(default=False, metadata={"help": "BatchNorm1d after every hidden Linear (BARS: on)"})
    embedding_l2: float = field(
        default=0.0,
        metadata={"help": "lambda of the embedding L2 (lambda/2 * sum of squares) returned by .regularization()"},
    )
    embedding_l2_scope: str = field(
        default="table",
        metadata={
            "help": "'table': all embedding rows, as FuxiCTR/BARS do; "
            "'batch': only the distinct rows the last forward looked up"
        },
    )

    def __post_init__(self) -> None:
        self.mlp_hidden = tuple(int(h) for h in self.mlp_hidden)  # YAML/JSON give lists
        self.mlp2_hidden = tuple(int(h) for h in self.mlp2_hidden)
        self.fs_hidden = tuple(int(h) for h in self.fs_hidden)
        self.fs1_context = tuple(str(f) for f in self.fs1_context)
        self.fs2_context = tuple(str(f) for f in self.fs2_context)
        try:
            self.kind = BackboneKind(self.kind)  # YAML/JSON give the string
        except ValueError:
            raise ValueError(f"BackboneConfig.kind must be one of {KINDS}, got '{self.kind}'") from None
        if self.embedding_dim < 1:
            raise ValueError(f"BackboneConfig.embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.cross_layers < 0:
            raise ValueError(f"BackboneConfig.cross_layers must be >= 0, got {self.cross_layers}")
        if any(h < 1 for h in self.mlp_hidden):
            raise ValueError(f"BackboneConfig.mlp_hidden sizes must be >= 1, got {self.mlp_hidden}")
        if self.kind is BackboneKind.DNN and not self.mlp_hidden:
            raise ValueError("BackboneConfig.kind='dnn' needs a non-empty mlp_hidden")
        if self.kind is BackboneKind.FINALMLP:
            if not self.mlp_hidden or not self.mlp2_hidden:
                raise ValueError("BackboneConfig.kind='finalmlp' needs non-empty mlp_hidden and mlp2_hidden")
            if any(h < 1 for h in self.mlp2_hidden + self.fs_hidden):
                raise ValueError(f"BackboneConfig mlp2_hidden / fs_hidden sizes must be >= 1, got "
                                 f"{self.mlp2_hidden} / {self.fs_hidden}")
            if self.num_heads < 1 or self.mlp_hidden[-1] % self.num_heads or self.mlp2_hidden[-1] % self.num_heads:
                raise ValueError(
                    f"BackboneConfig.num_heads={self.num_heads} must divide both streams' last sizes "
                    f"({self.mlp_hidden[-1]}, {self.mlp2_hidden[-1]})"
                )
        if self.fs_dense and self.kind is not BackboneKind.FINALMLP:
            raise ValueError(f"BackboneConfig.fs_dense is a finalmlp option, got kind='{self.kind.value}'")
        if self.kind is BackboneKind.DCNV2 and not self.mlp_hidden and self.cross_layers == 0:
            raise ValueError("BackboneConfig.kind='dcnv2' needs cross_layers > 0 or a non-empty mlp_hidden")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BackboneConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.embedding_l2 < 0:
            raise ValueError(f"BackboneConfig.embedding_l2 must be >= 0, got {self.embedding_l2}")
        if self.embedding_l2_scope not in L2_SCOPES:
            raise ValueError(
                f"BackboneConfig.embedding_l2_scope must be one of {L2_SCOPES}, got '{self.embedding_l2_scope}'"
            )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "BackboneConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown BackboneConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**raw)
