"""Typed configs for the training stages (the three of the method and the optional distillation), loadable from YAML (unknown keys are errors).

Shipped configs live in ``training/configs/``; ``--config tiny`` names ``training/configs/tiny.yaml``. A config file
may start from another with ``base: NAME_OR_PATH`` and then set only the keys it changes (``quick.yaml`` is ``tiny``
with shorter stages), so a shared value is written once. Every key has a default and a help text (dataclass field
metadata); :func:`larr.training.config_reference.config_reference` renders them as the markdown of
``docs/config-reference.md`` (``larr config reference``; a test keeps the committed file equal to it).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import yaml

from larr.choices import ChoiceEnum
from larr.data.subsequence import HistoryMode
from larr.errors import ConfigError
from larr.layout import ALL_VARIANTS, EmbedderSource, Variant
from larr.models.backbone_config import BackboneConfig
from larr.tokenization import DEFAULT_MAX_LENGTH

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class ModelConfig:
    """The embedded default LLM: a tiny Llama-style model trained from scratch (used when no base model)."""

    architecture: str = field(default="llama", metadata={"help": "llama | qwen2"})
    hidden_size: int = field(default=128, metadata={"help": "width of the residual stream"})
    intermediate_size: int = field(default=352, metadata={"help": "width of each MLP block"})
    num_hidden_layers: int = field(default=4, metadata={"help": "decoder layers"})
    num_attention_heads: int = field(default=4, metadata={"help": "query heads per layer"})
    num_key_value_heads: int = field(default=2, metadata={"help": "key/value heads per layer (grouped-query attention)"})
    max_position_embeddings: int = field(default=256, metadata={"help": "longest sequence the model can read"})
    vocab_size: int = field(default=3000, metadata={"help": "BPE vocabulary trained on the corpus"})


@dataclass
class BehaviourConfig:
    """Stage-1 heterogeneous-behaviour records: per user, a window of their train-split searches
    and clicks in time order, then ``<emb>`` and the behaviour that followed, so the LM learns how searches and
    clicks relate. Off by default (``records_per_user: 0``)."""

    records_per_user: int = field(
        default=0, metadata={"help": "behaviour records per user in the stage-1 corpus (0 = none, today's corpus)"}
    )
    window: int = field(default=6, metadata={"help": "behaviours before the predicted next one in each record"})
    search_feature: str = field(
        default="recent_search",
        metadata={"help": "the scene feature holding the query each row's user searched (a search behaviour before "
                  "that row's click, if any); empty: clicks only (a dataset without searches)"},
    )
    click_context: tuple[str, ...] = field(
        default=("time_slot", "weather", "place"),
        metadata={"help": "scene features written with each click (when and where it happened); YAML lists names"},
    )

    def __post_init__(self) -> None:
        if self.records_per_user < 0 or self.window < 1:
            raise ConfigError(
                f"pretrain.behaviour: records_per_user must be >= 0 and window >= 1, got "
                f"{self.records_per_user} and {self.window}"
            )


@dataclass
class PretrainConfig:
    """Stage 1: continual pretraining (next-token loss; masked-LM loss for an encoder base) on the recommendation corpus."""

    base_model: str | None = field(
        default=None,
        metadata={"help": "local Hugging Face folder (a causal LM, or a BERT-style encoder) or a packaged base's name "
                  "(minilm: all-MiniLM-L6-v2 from the `pretrained` extra, unpacked into the cache once); None: the "
                  "tiny default below"},
    )
    mlm_probability: float = field(
        default=0.15,
        metadata={"help": "encoder bases: share of non-special tokens masked-LM predicts (of those 80 % become the "
                  "mask token, 10 % a random token, 10 % stay); unused for causal LMs"},
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    block_size: int = field(default=128, metadata={"help": "tokens per training sequence (documents packed)"})
    batch_size: int = field(default=32, metadata={"help": "sequences per optimiser step"})
    max_steps: int = field(default=800, metadata={"help": "optimiser steps of stage 1 (its length)"})
    learning_rate: float = field(default=2e-3, metadata={"help": "peak AdamW learning rate (linear warm-up, then cosine decay to 10 %)"})
    warmup_steps: int = field(default=50, metadata={"help": "steps of linear learning-rate warm-up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    records_per_user_cap: int = field(default=200, metadata={"help": "click records per user in the corpus"})
    knowledge_repeats: int = field(
        default=20, metadata={"help": "copies of knowledge.txt in the corpus (it is small next to the records)"}
    )
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints (what --resume restarts from)"})
    eval_fraction: float = field(default=0.05, metadata={"help": "share of blocks held out for eval loss"})


@dataclass
class EmbedConfig:
    """Stage 2: contrastive fine-tuning into a text embedder."""

    max_length: int = field(default=DEFAULT_MAX_LENGTH, metadata={"help": "tokens per embedder input, <emb> included"})
    projection_dim: int = field(default=64, metadata={"help": "embedding size D"})
    temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature (its start value when learned)"})
    learn_temperature: bool = field(default=False, metadata={"help": "learn the temperature instead of fixing it"})
    batch_size: int = field(default=64, metadata={"help": "pairs per kind per step (in-batch negatives)"})
    max_steps: int = field(default=400, metadata={"help": "optimiser steps of stage 2 (each embedder trained)"})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak AdamW learning rate (linear warm-up, then cosine decay to 10 %)"})
    warmup_steps: int = field(default=30, metadata={"help": "steps of linear learning-rate warm-up"})
    weight_user_user: float = field(default=1.0, metadata={"help": "weight of the user-user InfoNCE loss"})
    weight_item_item: float = field(default=1.0, metadata={"help": "weight of the item-item InfoNCE loss"})
    weight_user_item: float = field(default=1.0, metadata={"help": "weight of the user-item InfoNCE loss"})
    weight_item_views: float = field(
        default=0.0,
        metadata={"help": "weight of the item-views InfoNCE loss, an item's name <-> its description (PerCoNet's two "
                  "views of one item); 0 = off, the pairs are not built"},
    )
    weight_persona: float = field(
        default=0.0,
        metadata={"help": "weight of the persona InfoNCE loss, a user's explicit persona (the categories they click "
                  "most) <-> their history text; 0 = off, the pairs are not built"},
    )
    persona_top_k: int = field(default=3, metadata={"help": "categories in a persona text"})
    persona_recent: int = field(default=20, metadata={"help": "a persona counts the categories of this many latest clicks"})
    history_length: int = field(default=6, metadata={"help": "clicked items in a user-history text"})
    eval_pairs: int = field(default=300, metadata={"help": "held-out pairs per kind for recall@10"})
    checkpoint_every: int = field(default=100, metadata={"help": "steps between checkpoints (what --resume restarts from)"})


class DistillLoss(ChoiceEnum):
    """What the student matches of the teacher's embedding of each text (training/losses/distillation.py)."""

    COSINE = "cosine"  # 1 - cos of the served, unit-norm embeddings: only their direction matters downstream
    MSE = "mse"  # mean squared error of the projection outputs before the L2 norm (direction and length)

    @classmethod
    def choice_name(cls) -> str:
        return "distill.loss"


class PruneImportance(ChoiceEnum):
    """How a channel's importance is scored before each pruning step (training/prune.py)."""

    TAYLOR = "taylor"  # sum of |w * dL/dw| over the channel's weights, accumulated since the last pruning (HomoDistil)
    MAGNITUDE = "magnitude"  # sum of |w| over the channel's weights at the pruning step

    @classmethod
    def choice_name(cls) -> str:
        return "distill.importance"


@dataclass
class DistillConfig:
    """``larr train distill``: a narrower copy of the stage-2 embedder (HomoDistil: the student starts as the teacher
    and is pruned step by step to the target width while it learns to reproduce the teacher's embeddings).

    The student's hidden size, every MLP's intermediate size and the query heads per key/value group shrink together
    to ``width_ratio`` of the teacher's over ``prune_steps`` pruning steps, ``prune_every`` training steps apart; the
    remaining steps train at the final width. Texts: stage 2's training pairs (both sides of every kind). Written to
    ``RUN/distill/model/``; stage 3 and the export read it when ``ctr.embedder`` is ``distilled``.
    """

    width_ratio: float = field(default=0.5, metadata={"help": "final widths / the teacher's (hidden, intermediate, query heads per group); in (0, 1]"})
    steps: int = field(default=400, metadata={"help": "optimiser steps of the distillation (pruning included)"})
    prune_steps: int = field(default=4, metadata={"help": "pruning steps from the teacher's widths to width_ratio (equal steps)"})
    prune_every: int = field(default=50, metadata={"help": "training steps between pruning steps (the first is at step prune_every)"})
    importance: PruneImportance = field(default=PruneImportance.TAYLOR, metadata={"help": "channel importance: taylor (|w*grad|, accumulated) or magnitude (|w|)"})
    loss: DistillLoss = field(default=DistillLoss.COSINE, metadata={"help": "cosine (unit-norm embeddings) or mse (pre-norm projection outputs)"})
    batch_size: int = field(default=256, metadata={"help": "texts per step"})
    learning_rate: float = field(default=3e-4, metadata={"help": "peak AdamW learning rate (linear warm-up, then cosine decay to 10 %)"})
    warmup_steps: int = field(default=20, metadata={"help": "steps of linear learning-rate warm-up"})

    def __post_init__(self) -> None:
        if not 0.0 < self.width_ratio <= 1.0:
            raise ConfigError(f"distill.width_ratio must be in (0, 1], got {self.width_ratio}")
        if self.prune_steps < 1 or self.prune_every < 1:
            raise ConfigError("distill.prune_steps and distill.prune_every must be >= 1")
        if self.prune_steps * self.prune_every > self.steps:
            raise ConfigError(f"distill: the last pruning step ({self.prune_steps} x {self.prune_every}) comes after "
                              f"distill.steps ({self.steps})")
        try:
            self.importance = PruneImportance.parse(self.importance)
            self.loss = DistillLoss.parse(self.loss)
        except ValueError as error:
            raise ConfigError(str(error)) from None


@dataclass
class CTRConfig:
    """Stage 3: frozen LLM features -> aggregation encoder (+ alignment) -> CTR backbone."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    agg_dim: int = field(default=64, metadata={"help": "aggregation-encoder width"})
    agg_layers: int = field(default=2, metadata={"help": "Transformer layers of the aggregation encoder"})
    agg_heads: int = field(default=4, metadata={"help": "attention heads of the aggregation encoder (divide agg_dim)"})
    agg_dropout: float = field(default=0.0, metadata={"help": "dropout in the aggregation encoder (its inputs are frozen; early stopping guards it)"})
    scene_dropout: float = field(
        default=0.1,
        metadata={"help": "probability that one (example, scene feature) LLM embedding is replaced by the unseen-text "
                  "row (zeros, larr.contract.UNSEEN_SCENE_FILL) in training; the server's fresh_text_policy 'async' "
                  "scores texts not embedded yet with that row, so the model must have seen it. 0.1 keeps nine in ten "
                  "inputs as a strict server sends them while each batch still shows the row often (~batch_size * K "
                  "/ 10 times); benchmarks/studies/fresh-text-replay measures both sides. ID fields are never dropped"},
    )
    align_weight: float = field(default=0.1, metadata={"help": "weight of the alignment loss against BCE"})
    align_temperature: float = field(default=0.1, metadata={"help": "temperature of the alignment InfoNCE"})
    llm_input_scale: float = field(
        default=1.0,
        metadata={"help": "factor on the LLM inputs (item text, aligned scene) before the backbone; below 1 puts them "
                  "at the scale of small-initialised, L2-regularised ID embeddings (FuxiCTR recipe), which they "
                  "would otherwise drown out"},
    )
    batch_size: int = field(default=512, metadata={"help": "examples per optimiser step"})
    max_epochs: int = field(default=8, metadata={"help": "most passes over the train split (early stopping may end sooner)"})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay (L2 on every parameter)"})
    patience: int = field(default=2, metadata={"help": "epochs without validation-AUC gain before stopping"})
    lr_decay_on_plateau: float = field(
        default=0.1,
        metadata={"help": "multiply the learning rate by this after every lr_decay_patience epochs in a row without "
                  "validation-AUC gain"},
    )
    lr_decay_patience: int = field(
        default=1,
        metadata={"help": "epochs in a row without validation-AUC gain before each learning-rate decay; 1 is "
                  "FuxiCTR/BARS (decay after every such epoch). Must be below patience, or no decay ever happens"},
    )
    grad_clip: float = field(default=10.0, metadata={"help": "gradient-norm clipping (0 = off)"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints (what --resume restarts from)"})
    embed_batch_size: int = field(default=256, metadata={"help": "texts per frozen-embedder forward"})
    read_test: bool = field(
        default=True,
        metadata={"help": "score the test split after training; false for model-selection runs (tuning on "
                  "validation), whose result.json then holds validation numbers only, so no test number is seen"},
    )
    embedder: EmbedderSource = field(
        default=EmbedderSource.STAGE2,
        metadata={"help": "the frozen embedder of larr, no_alignment and full_text: stage2 (RUN/embed/model) or "
                  "distilled (RUN/distill/model, `larr train distill`; `larr train all` then runs it before stage 3). "
                  "The export serves the embedder the run's config.yaml names here"},
    )
    variants: tuple[Variant, ...] = field(
        default=ALL_VARIANTS,
        metadata={"help": "which models to train and report (larr and id_only are the headline pair); "
                  "YAML lists their names"},
    )
    history: HistoryMode = field(
        default=HistoryMode.OFF,
        metadata={"help": "user-history sub-sequence a target-attention layer in the backbone reads (needs the "
                  "dataset's history.csv): 'off' (no layer, today's model) | 'full' (last history_length events) | "
                  "'last_k' (last history_recent events) | 'context' (events whose context is in the request "
                  "context's prototype + the last history_recent, at most history_length). Training and offline "
                  "evaluation only: the serving model has no history input"},
    )
    history_length: int = field(default=50, metadata={"help": "most history events one request reads ('full', 'context')"})
    history_recent: int = field(
        default=10, metadata={"help": "the last events kept for short-term preference ('context'; all of 'last_k')"}
    )
    prototypes: int = field(
        default=4,
        metadata={"help": "'context': k of the k-medoids that groups the history's contexts into prototypes by the "
                  "Jensen-Shannon divergence of the categories chosen in them"},
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.scene_dropout <= 1.0:
            raise ConfigError(f"ctr.scene_dropout must be in [0, 1], got {self.scene_dropout}")
        try:
            self.history = HistoryMode.parse(self.history)
        except ValueError as error:
            raise ConfigError(f"ctr.history: {error}") from None
        if not 1 <= self.lr_decay_patience < self.patience:
            raise ConfigError(f"ctr.lr_decay_patience must be in [1, ctr.patience - 1] = [1, {self.patience - 1}] "
                              f"(the run stops after ctr.patience stale epochs), got {self.lr_decay_patience}")
        for name in ("history_length", "history_recent", "prototypes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ctr.{name} must be >= 1, got {getattr(self, name)}")
        try:
            self.embedder = EmbedderSource.parse(self.embedder)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        # YAML and --set give names; everything downstream compares Variant members
        try:
            self.variants = tuple(Variant.parse(v) for v in self.variants)
        except ValueError as error:
            raise ConfigError(f"ctr.variants: {error}") from None


@dataclass
class TrainConfig:
    """All stages. ``data`` is a dataset folder (see larr.data.schema)."""

    data: str = field(
        default="runs/data/synth",
        metadata={"help": "dataset folder (larr.data.schema); relative to the working directory; `larr train --data DIR` "
                  "overrides it"},
    )
    seed: int = field(default=2024, metadata={"help": "seeds data order, initialisation and dropout (runs repeat exactly)"})
    threads: int = field(default=0, metadata={"help": "torch intra-op threads; 0 = torch's default"})
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    ctr: CTRConfig = field(default_factory=CTRConfig)


# --------------------------------------------------------------------------------------------- YAML


def _coerce(tp, value, where: str):
    """Build a dataclass/tuple/scalar of type ``tp`` from plain YAML data, with errors naming the key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list")
        (item_type, *_) = typing.get_args(tp)
        return tuple(_coerce(item_type, v, where) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls, data: dict, where: str = "config"):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    values = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as error:  # a __post_init__ check of a class outside this module (BackboneConfig)
        raise ConfigError(f"{where}: {error}") from None


def to_dict(config) -> dict:
    def convert(value):
        if isinstance(value, enum.Enum):  # YAML keeps plain names (safe_dump cannot write Enum members)
            return value.value
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, Enum):  # e.g. BackboneKind: YAML (safe_dump) takes only the plain value
            return value.value
        return value

    return convert(dataclasses.asdict(config))


def resolve_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config '{name_or_path}' is neither a file nor a shipped config ({names})")


BASE_KEY = "base"  # a config file's key naming the config it starts from (not a TrainConfig field)


def read_config_file(name_or_path: str, _including: tuple[Path, ...] = ()) -> dict:
    """A config file's keys as plain YAML data, its ``base:`` chain merged in (the file's own keys win)."""
    path = resolve_config_path(name_or_path).resolve()
    if path in _including:
        raise ConfigError(f"{path}: `{BASE_KEY}:` goes round in a circle ({' -> '.join(p.name for p in (*_including, path))})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    # a relative base is looked up beside the file first, so a config and its base can move together
    beside = path.parent / str(base)
    return _merge(read_config_file(str(beside if beside.is_file() else base), (*_including, path)), data)


def _merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it, section by section (a section sets only the keys it names)."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged


def parse_overrides(items: list[str]) -> dict:
    """``--set`` arguments ``["ctr.max_epochs=2", "ctr.variants=[larr]"]`` → ``{"ctr.max_epochs": 2, ...}`` (YAML
    values), the ``overrides`` of :func:`load_config`; a malformed item raises :class:`ConfigError`."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item!r}: the value is not YAML ({error.problem})") from None
    return overrides


def load_config(name_or_path: str | None, overrides: dict | None = None) -> TrainConfig:
    data = read_config_file(name_or_path) if name_or_path else {}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return from_dict(TrainConfig, data)


def save_config(config: TrainConfig, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
