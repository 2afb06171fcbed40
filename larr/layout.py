"""Where a training run keeps what it writes, and which stage-3 variants exist — stated once.

Every stage, the exporter and the benchmarks read paths from :class:`RunLayout` and compare variants
as :class:`Variant` members, never as bare strings::

    layout = RunLayout(Path("runs/tiny"))
    layout.embedder_dir(Variant.NO_STAGE1)   # runs/tiny/embed_no_stage1/model
    layout.ctr_dir(Variant.LARR)             # runs/tiny/ctr/larr

Run folder (``larr train all --out RUN``)::

    RUN/config.yaml                 the resolved TrainConfig
    RUN/metrics.json                every stage's headline numbers
    RUN/pretrain/init/              the base LM before stage 1 (kept for the no_stage1 ablation)
    RUN/pretrain/model/             stage 1: the continually pretrained causal LM (HF folder)
    RUN/embed/model/                stage 2: the text embedder (TextEmbedder folder)
    RUN/embed_no_stage1/model/      stage 2 started from the base model (the no_stage1 ablation)
    RUN/distill/model/              `larr train distill`: the stage-2 embedder pruned to a narrower width (optional)
    RUN/ctr/<variant>/              stage 3: one CTR model per variant
    RUN/model_repository/           `larr export`'s Triton model repository (when no --out is given)

Layer 1: no torch, no other larr module.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import yaml

from larr.choices import ChoiceEnum

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
MODEL_DIR = "model"  # inside each LLM stage's folder
DATASET_FILE = "dataset.json"  # marks a dataset folder (larr.data.schema writes it)
BASE_MODEL_DIR = "init"  # inside pretrain/: the base LM as it was before stage 1 (the no_stage1 ablation's start)
MODEL_REPOSITORY_DIR = "model_repository"  # `larr export`'s output when no --out is given


class Stage(ChoiceEnum):
    """The training stages, by the folder (and CLI name) each writes: the three of the method, and the optional
    distillation of the stage-2 embedder (``larr train distill``), which runs between stages 2 and 3."""

    PRETRAIN = "pretrain"
    EMBED = "embed"
    DISTILL = "distill"
    CTR = "ctr"


class EmbedderSource(ChoiceEnum):
    """Which TextEmbedder stage 3 and the export read for the variants whose features are LARR's own
    (``Variant.embedder_source`` is ``larr``): stage 2's, or its distilled copy (``larr train distill``)."""

    STAGE2 = "stage2"
    DISTILLED = "distilled"

    @classmethod
    def choice_name(cls) -> str:
        return "ctr.embedder"


class Variant(ChoiceEnum):
    """Stage-3 models: the method and its ablations (README, "Ablations")."""

    LARR = "larr"  # the full method
    ID_ONLY = "id_only"  # the same backbone over the ID fields only; no LLM input
    NO_STAGE1 = "no_stage1"  # stage 2 started from the base model as it was before stage 1
    NO_STAGE2 = "no_stage2"  # the stage-1 LM pooled as its checkpoint says (last token: causal), no contrastive tuning
    NO_ALIGNMENT = "no_alignment"  # alignment loss weight 0
    FULL_TEXT = "full_text"  # the whole scene as one text per example (what LARR avoids when serving)

    @classmethod
    def choice_name(cls) -> str:
        return "variant"

    @property
    def uses_llm(self) -> bool:
        return self is not Variant.ID_ONLY

    @property
    def whole_scene(self) -> bool:
        """True when the model reads one embedding of the concatenated scene instead of K per-feature ones."""
        return self is Variant.FULL_TEXT

    @property
    def embedder_source(self) -> "Variant":
        """Whose frozen embedder the variant's LLM features come from (LARR's unless an LLM stage is ablated)."""
        return self if self in (Variant.NO_STAGE1, Variant.NO_STAGE2) else Variant.LARR

    @property
    def servable(self) -> bool:
        """Served by the ``larr`` ensemble: a TextEmbedder folder plus per-feature scene embeddings.

        ``no_stage2`` has no TextEmbedder folder (its features come from the stage-1 LM) and ``full_text``
        reads one whole-scene embedding per request, which is what the feature cache exists to avoid.
        """
        return self not in (Variant.NO_STAGE2, Variant.FULL_TEXT)


ALL_VARIANTS: tuple[Variant, ...] = tuple(Variant)
SERVABLE_VARIANTS: tuple[Variant, ...] = tuple(v for v in Variant if v.servable)


@dataclass(frozen=True)
class RunLayout:
    """Paths of every stage's outputs under one run folder (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        return self.root / METRICS_FILE

    def stage_dir(self, stage: Stage) -> Path:
        return self.root / Stage(stage).value

    @property
    def pretrain_dir(self) -> Path:
        return self.stage_dir(Stage.PRETRAIN)

    @property
    def pretrained_lm_dir(self) -> Path:
        """Stage 1's causal LM (a Hugging Face folder)."""
        return self.pretrain_dir / MODEL_DIR

    @property
    def base_lm_dir(self) -> Path:
        """The base LM as it was before stage 1 (HF folder; stage 2 of ``no_stage1`` starts here)."""
        return self.pretrain_dir / BASE_MODEL_DIR

    def embed_dir(self, variant: Variant = Variant.LARR) -> Path:
        """Stage 2's output folder for the embedder ``variant`` reads (checkpoints, steps.csv, model/)."""
        source = Variant.parse(variant).embedder_source
        if source is Variant.NO_STAGE1:
            return self.root / f"{Stage.EMBED.value}_{Variant.NO_STAGE1.value}"
        return self.stage_dir(Stage.EMBED)

    def embedder_dir(self, variant: Variant = Variant.LARR, source: EmbedderSource = EmbedderSource.STAGE2) -> Path:
        """The trained TextEmbedder folder ``variant`` reads its features from: stage 2's, or with ``source``
        ``distilled`` the distilled copy for the variants whose embedder is LARR's (the ablated embedders of
        ``no_stage1`` / ``no_stage2`` are never distilled)."""
        variant = Variant.parse(variant)
        if EmbedderSource.parse(source) is EmbedderSource.DISTILLED and variant.embedder_source is Variant.LARR:
            return self.distilled_embedder_dir
        return self.embed_dir(variant) / MODEL_DIR

    @property
    def distill_dir(self) -> Path:
        """``larr train distill``'s output folder (steps.csv, model/)."""
        return self.stage_dir(Stage.DISTILL)

    @property
    def distilled_embedder_dir(self) -> Path:
        """The distilled TextEmbedder (a normal TextEmbedder folder, narrower)."""
        return self.distill_dir / MODEL_DIR

    def ctr_embedder_source(self) -> EmbedderSource:
        """The ``ctr.embedder`` of the run's ``config.yaml`` (stage2 when the file or the key is absent): which
        embedder the run's CTR models were trained on, hence which one the export serves with them."""
        if not self.config_file.exists():
            return EmbedderSource.STAGE2
        ctr = (yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}).get(Stage.CTR.value) or {}
        return EmbedderSource.parse(ctr.get("embedder", EmbedderSource.STAGE2.value))

    @property
    def llm_stage_dirs(self) -> tuple[Path, ...]:
        """Every folder stages 1 and 2 (and the distillation) write: what stage 3 reads its frozen LLM features from."""
        return self.pretrain_dir, self.embed_dir(Variant.LARR), self.embed_dir(Variant.NO_STAGE1), self.distill_dir

    def ctr_dir(self, variant: Variant) -> Path:
        return self.stage_dir(Stage.CTR) / Variant.parse(variant).value

    @property
    def model_repository_dir(self) -> Path:
        """Where ``larr export`` writes the run's Triton model repository when no ``--out`` is given."""
        return self.root / MODEL_REPOSITORY_DIR

    def dataset_name(self) -> str | None:
        """The ``data`` entry of the run's ``config.yaml`` as written; None when the file or the entry is absent."""
        if not self.config_file.exists():
            return None
        return (yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}).get("data") or None

    def dataset_candidates(self) -> list[Path]:
        """Where the named dataset is looked for, in order: an absolute path as it is; a relative one against
        the working directory, then against every folder above the run (a run moved with its data keeps
        working). Empty when the config names no dataset."""
        data = self.dataset_name()
        if data is None:
            return []
        if Path(data).is_absolute():
            return [Path(data)]
        return [Path.cwd() / data, *(folder / data for folder in self.root.resolve().parents)]

    def dataset_dir(self) -> Path | None:
        """The dataset folder the run's ``config.yaml`` names, resolved as at training time (the first of
        :meth:`dataset_candidates` holding a ``dataset.json``). None when the config names no dataset or the
        dataset is not there any more."""
        return next((c for c in self.dataset_candidates() if (c / DATASET_FILE).exists()), None)


# The python-backend adapters (``<model>/1/model.py``) are package data of ``larr.model_repository`` (the
# checkout's top-level model_repository/ folder), so an installed wheel exports exactly as a checkout does.
ADAPTERS_PACKAGE = "larr.model_repository"


def package_folder(package: str) -> Path:
    """The folder of an installed larr package, whose data files (adapters) are plain files in it: a wheel
    installs unzipped and an editable install maps the package to the checkout."""
    folder = importlib.resources.files(package)
    if not isinstance(folder, Path):  # e.g. imported from a zip file: Triton cannot read an adapter from there
        raise FileNotFoundError(f"{package} is not installed as a folder ({folder}); install larr with pip")
    return folder


def packaged_adapters_dir() -> Path:
    """Where the python-backend adapters ``<model>/1/model.py`` that ``larr export`` copies live."""
    return package_folder(ADAPTERS_PACKAGE)
