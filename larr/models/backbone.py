"""The ID part of LARR's stage-3 CTR model: field embeddings (+ dense features) → DCN-V2 / DeepFM / FinalMLP / DNN
→ logit.

One class per architecture (:class:`DCNv2Backbone`, :class:`DeepFMBackbone`, :class:`FinalMLPBackbone`,
:class:`DNNBackbone`), built from small arch modules (:class:`FieldEmbedding`, :class:`MLP`, :class:`CrossNetV2`,
:class:`FactorizationMachine`, :class:`FeatureGate`, :class:`InteractionAggregation`); :func:`build_backbone` picks
the class for ``BackboneConfig.kind``.

Alone it is the ID-only baseline; LARR feeds the item's LLM text embedding and the aligned scene vector in as
``dense`` features, concatenated to the flattened field embeddings before the cross/deep towers. With
``history_field`` set, a :class:`TargetAttention` layer reads a user-history sequence of that field's values
(the items of a selected sub-sequence, ``ctr.history``) with the candidate's embedding as the query, and its
output joins the towers' input too.

    from larr.models.backbone import BackboneConfig, FieldVocab, build_backbone

    vocab = FieldVocab(["user", "item", "weather"]).fit(train_columns)         # 0 = unseen value
    model = build_backbone(vocab.sizes, dense_dim=0, config=BackboneConfig(kind="dcnv2", embedding_l2=0.05))
    logits = model(torch.from_numpy(vocab.transform(batch_columns)), None)   # (B,)
    loss = F.binary_cross_entropy_with_logits(logits, labels) + model.regularization()

The layers follow FuxiCTR v1.1 (the BARS benchmark code): MLP blocks are Linear → [BatchNorm] → ReLU → Dropout,
DCN-V2 is the "parallel" structure with full-rank cross layers ``x_{l+1} = x_0 * (W x_l + b) + x_l``, DeepFM is
first-order weights + the FM pairwise term + the MLP. ``embedding_l2`` follows FuxiCTR's ``embedding_regularizer``
(read in ``fuxictr/pytorch/models/base_model.py``): ``lambda / 2 * ||E||^2`` summed over the **whole** embedding
tables (the FM first-order weights included) and added, unnormalised, to the batch-mean log loss. The config's
``embedding_l2_scope="batch"`` restricts the sum to the distinct rows the last batch looked up (lazy, sparse-style
regularisation), the cheaper choice for very large tables.

Recipe that reproduces BARS Frappe_x1 with the ID-only backbone (10 categorical fields: user, item, 8 contexts,
``FieldVocab`` fitted on train; measured test AUC over 3 seeds, BARS in brackets):

* ``BackboneConfig(kind="deepfm", embedding_dim=10, mlp_hidden=(400, 400, 400), dropout=0.2, batch_norm=True,
  embedding_l2=0.05)`` → 0.9845 ± 0.0007 (0.9839 ± 0.0002 over 5 seeds);
* ``BackboneConfig(kind="dcnv2", embedding_dim=10, cross_layers=4, mlp_hidden=(400, 400, 400), dropout=0.4,
  batch_norm=True, embedding_l2=0.05)`` → 0.9843 ± 0.0003 (0.9838 ± 0.0004);
* training as FuxiCTR does it: Adam lr 1e-3, batch 4096, gradient-norm clip 10, validation AUC after every
  epoch; an epoch that does not improve it multiplies the lr by 0.1 (reduce-on-plateau, which is where most of
  the last 0.005 AUC comes from) and counts towards patience 2; restore the best epoch. About 15-25 epochs.
  With ``embedding_l2_scope="batch"`` DeepFM reached only 0.9831.

FinalMLP (Mao et al., AAAI 2023; the best AUC on the BARS Frappe_x1 board, 0.9861) as BARS ran it
(``ranking/ctr/FinalMLP/FinalMLP_frappe_x1`` in reczoo/BARS, FuxiCTR 2.0.1): ``BackboneConfig(kind="finalmlp",
embedding_dim=10, mlp_hidden=(400,), mlp2_hidden=(100,), dropout=0.4, batch_norm=True, fs_hidden=(400,),
fs1_context=("user",), fs2_context=("item",), num_heads=5, embedding_l2=0.05)`` with the same training recipe;
``training/configs/frappe.yaml`` names it as a comment, not yet measured here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from larr.choices import ChoiceEnum


class BackboneKind(ChoiceEnum):
    """The CTR architecture of a :class:`BackboneConfig`; configs (YAML, ``ctr.json``) spell it by value.

    * ``dcnv2`` — DCN-V2, parallel: full-rank cross network ‖ MLP → linear head (:class:`DCNv2Backbone`);
    * ``deepfm`` — first-order weights + FM pairwise term + MLP (:class:`DeepFMBackbone`);
    * ``finalmlp`` — two MLP streams, each over a context-gated copy of the input, fused by multi-head bilinear
      aggregation (:class:`FinalMLPBackbone`);
    * ``dnn`` — MLP only (:class:`DNNBackbone`).

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
    """The ID part of the CTR model: field embeddings -> DCN-V2 / DeepFM / DNN -> logit (``ctr.backbone`` in a config)."""

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


# --------------------------------------------------------------------------------------------- vocabulary


class FieldVocab:
    """Maps raw categorical values (str or int) of each field to indices ``1..n``; 0 is every unseen value.

    ``fit`` on the train split, ``transform`` any split; ``sizes`` (``n + 1`` per field) are the
    ``field_vocab_sizes`` of :func:`build_backbone`. Values within a field are indexed in sorted order
    (ints before strings), so the vocabulary does not depend on the row order of the data.
    """

    def __init__(self, field_names: Sequence[str]):
        names = [str(n) for n in field_names]
        if not names:
            raise ValueError("FieldVocab needs at least one field")
        if len(set(names)) != len(names):
            raise ValueError(f"FieldVocab field names repeat: {names}")
        self.field_names: list[str] = names
        self._values: list[list[int | str]] | None = None
        self._index: list[dict[int | str, int]] = []

    # ---- fitting / applying

    @staticmethod
    def _plain(value: Any, field_name: str) -> int | str:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(f"FieldVocab field '{field_name}': bool value {value!r} (use str or int)")
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (str, np.str_)):
            return str(value)
        raise TypeError(
            f"FieldVocab field '{field_name}': value {value!r} of type {type(value).__name__} is not str or int"
        )

    def _columns(self, columns: Mapping[str, Iterable] | Sequence[Iterable]) -> list[list]:
        if isinstance(columns, Mapping):
            missing = [n for n in self.field_names if n not in columns]
            if missing:
                raise ValueError(f"FieldVocab: missing column(s) {missing}")
            cols = [list(columns[n]) for n in self.field_names]
        else:
            cols = [list(c) for c in columns]
            if len(cols) != len(self.field_names):
                raise ValueError(f"FieldVocab: got {len(cols)} columns for {len(self.field_names)} fields")
        lengths = {len(c) for c in cols}
        if len(lengths) > 1:
            raise ValueError(f"FieldVocab: columns differ in length: {[len(c) for c in cols]}")
        return cols

    def fit(self, columns: Mapping[str, Iterable] | Sequence[Iterable], min_count: int = 1) -> "FieldVocab":
        """Learn each field's values from ``columns`` (one per field, by name or in order); returns ``self``.

        Values seen fewer than ``min_count`` times are left out, i.e. map to 0 like unseen ones.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        values = []
        for name, column in zip(self.field_names, self._columns(columns)):
            counts: dict[int | str, int] = {}
            for v in column:
                key = self._plain(v, name)
                counts[key] = counts.get(key, 0) + 1
            kept = [v for v, c in counts.items() if c >= min_count]
            values.append(sorted(kept, key=lambda v: (isinstance(v, str), v)))
        self._set_values(values)
        return self

    def _set_values(self, values: list[list[int | str]]) -> None:
        self._values = values
        self._index = [{v: i + 1 for i, v in enumerate(vs)} for vs in values]

    def _require_fit(self) -> list[list[int | str]]:
        if self._values is None:
            raise RuntimeError("FieldVocab is not fitted: call fit() or from_dict() first")
        return self._values

    def transform(self, columns: Mapping[str, Iterable] | Sequence[Iterable]) -> np.ndarray:
        """Index ``columns`` (one per field) → (N, F) int64, 0 for values not in the vocabulary."""
        self._require_fit()
        cols = self._columns(columns)
        n = len(cols[0])
        out = np.zeros((n, len(cols)), dtype=np.int64)
        for f, (index, column) in enumerate(zip(self._index, cols)):
            # numpy ints/strs hash and compare equal to Python ones, so dict lookups need no conversion
            out[:, f] = np.fromiter((index.get(v, 0) for v in column), dtype=np.int64, count=n)
        return out

    def fit_transform(self, columns: Mapping[str, Iterable] | Sequence[Iterable], min_count: int = 1) -> np.ndarray:
        return self.fit(columns, min_count=min_count).transform(columns)

    @property
    def sizes(self) -> list[int]:
        """Rows per field's embedding table: the known values plus the unseen row 0."""
        return [len(v) + 1 for v in self._require_fit()]

    # ---- serialisation

    def to_dict(self) -> dict:
        """JSON-serialisable form; ints stay ints and strings stay strings (lists, not object keys)."""
        return {"fields": list(self.field_names), "values": [list(v) for v in self._require_fit()]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FieldVocab":
        if not isinstance(raw, Mapping) or "fields" not in raw or "values" not in raw:
            raise ValueError("FieldVocab.from_dict needs a mapping with 'fields' and 'values'")
        vocab = cls(raw["fields"])
        values = raw["values"]
        if len(values) != len(vocab.field_names):
            raise ValueError(f"FieldVocab.from_dict: {len(values)} value lists for {len(vocab.field_names)} fields")
        cleaned = []
        for name, vs in zip(vocab.field_names, values):
            plain = [cls._plain(v, name) for v in vs]
            if len(set(plain)) != len(plain):
                raise ValueError(f"FieldVocab.from_dict: field '{name}' lists a value twice")
            cleaned.append(plain)
        vocab._set_values(cleaned)
        return vocab

    def __repr__(self) -> str:
        sizes = self.sizes if self._values is not None else "unfitted"
        return f"FieldVocab(fields={self.field_names}, sizes={sizes})"


# --------------------------------------------------------------------------------------------- arch modules


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


# --------------------------------------------------------------------------------------------- backbones


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
    "KINDS",
    "Backbone",
    "BackboneConfig",
    "BackboneKind",
    "CrossNetV2",
    "DCNv2Backbone",
    "DNNBackbone",
    "DeepFMBackbone",
    "FactorizationMachine",
    "FeatureGate",
    "FieldEmbedding",
    "FinalMLPBackbone",
    "InteractionAggregation",
    "FieldVocab",
    "MLP",
    "TargetAttention",
    "build_backbone",
]
