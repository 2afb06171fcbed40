"""``larr evaluate``: a run's trained CTR models scored on a split, or on a segment of it: N, AUC, logloss, GAUC.

    larr evaluate --run runs/tiny --split test                                 # every trained variant
    larr evaluate --run runs/tiny --variant larr --split test --where user_seen=0   # users absent from train
    larr evaluate --run runs/tiny --split valid --where weather=downpour --where place=office
    larr evaluate --run runs/tiny --split test --held-out-scenes weather,place    # scene values absent from train
    larr evaluate --run runs/tiny --split test --users returning.txt --scores scores.csv

Scoring is stage 3's own (:func:`larr.training.ctr.predict` on the frozen embedder's features, the metrics of
:mod:`larr.training.metrics`), so ``--split test`` without a segment repeats the test numbers of the run's
``metrics.json``. A segment is the rows matching every ``--where COLUMN=VALUE`` (a column of the split's CSV, or
``user_seen``: 1 when the row's user has a row in the train split; ``scene_seen``: 1 when every scene value of the
row occurs in the train split), with ``--held-out-scenes [F,G]``, that have a value of F or G (default: any scene
feature) that no train row has — computed from the dataset, so it works on any log — and, with ``--users FILE``,
whose user id the file lists (one id per line). ``--scores FILE`` writes each selected row's click probability per
variant (CSV).
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from larr.data.schema import INTERACTION_ID_COLUMNS, Dataset, Interactions, load_dataset
from larr.errors import MissingInputError, UsageError
from larr.layout import RunLayout, Variant
from larr.models.ctr_model import SPEC_FILE, LarrCTR
from larr.models.embedder import embed_texts
from larr.models.field_vocab import FieldVocab
from larr.training.cli import SCENE_SEEN, USER_SEEN
from larr.training.ctr import load_frozen_embedder, predict, scene_text_codes, split_tensors
from larr.training.metrics import ctr_metrics

EMBED_BATCH_SIZE = 256


@dataclass(frozen=True)
class Segment:
    """Which rows of a split to score: every ``(column, value)`` in ``where`` matches, and the user is in ``users``."""

    where: tuple[tuple[str, str], ...] = ()
    users: frozenset[int] | None = None
    unseen_in: tuple[str, ...] | None = None  # None: off; (): any scene feature

    def describe(self) -> str:
        parts = [f"{column}={value}" for column, value in self.where]
        if self.unseen_in is not None:
            parts.append(f"a {'/'.join(self.unseen_in) or 'scene'} value absent from train")
        if self.users is not None:
            parts.append(f"{len(self.users)} listed users")
        return ", ".join(parts) or "all rows"


def parse_where(text: str) -> tuple[str, str]:
    """``weather=heavy rain`` -> ``("weather", "heavy rain")``; the value may contain '='."""
    column, sep, value = text.partition("=")
    if not sep or not column.strip():
        raise UsageError(f"--where {text!r}: expected COLUMN=VALUE")
    return column.strip(), value


def read_user_ids(path: Path) -> frozenset[int]:
    """One user id per line; blank lines and a ``user_id`` header are skipped."""
    if not path.exists():
        raise MissingInputError(f"--users {path}: no such file")
    users = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or (number == 1 and text == "user_id"):
            continue
        try:
            users.add(int(text))
        except ValueError:
            raise UsageError(f"--users {path}: line {number}: {text!r} is not a user id") from None
    return frozenset(users)


def select_rows(dataset: Dataset, split: str, segment: Segment) -> np.ndarray:
    """(M,) indices of the rows of ``split`` in ``segment``, in file order."""
    rows = dataset.splits[split]
    keep = np.ones(len(rows), dtype=bool)
    features = dataset.info.scene_features
    for column, value in segment.where:
        if column in features:
            keep &= np.array(rows.scene[features.index(column)], dtype=object) == value
            continue
        known = [*INTERACTION_ID_COLUMNS, *features, USER_SEEN, SCENE_SEEN]
        if column not in known:
            raise UsageError(f"--where {column}={value}: no column {column!r}; one of {known}")
        try:
            number = int(value)
        except ValueError:
            raise UsageError(f"--where {column}={value}: {column} is an integer column") from None
        if column == USER_SEEN:
            keep &= np.isin(rows.user_id, dataset.train.user_id) == bool(number)
        elif column == SCENE_SEEN:
            keep &= unseen_scene_rows(dataset, split, features) != bool(number)
        else:
            keep &= _id_column(rows, column) == number
    if segment.unseen_in is not None:
        keep &= unseen_scene_rows(dataset, split, segment.unseen_in or features)
    if segment.users is not None:
        keep &= np.isin(rows.user_id, np.fromiter(segment.users, dtype=np.int64))
    return np.flatnonzero(keep)


def unseen_scene_rows(dataset: Dataset, split: str, features: tuple[str, ...]) -> np.ndarray:
    """(N,) bool: the rows of ``split`` with a value of one of ``features`` that no row of the train split has."""
    names = dataset.info.scene_features
    unknown = [f for f in features if f not in names]
    if unknown:
        raise UsageError(f"--held-out-scenes {','.join(features)}: no scene feature(s) {unknown}; one of {list(names)}")
    rows = dataset.splits[split]
    unseen = np.zeros(len(rows), dtype=bool)
    for feature in features:
        k = names.index(feature)
        seen = set(dataset.train.scene[k])
        unseen |= np.fromiter((text not in seen for text in rows.scene[k]), dtype=bool, count=len(rows))
    return unseen


def _id_column(rows: Interactions, column: str) -> np.ndarray:
    return {"user_id": rows.user_id, "item_id": rows.item_id, "label": rows.label, "timestamp": rows.timestamp}[column]


def trained_variants(layout: RunLayout) -> list[Variant]:
    return [v for v in Variant if (layout.ctr_dir(v) / SPEC_FILE).exists()]


@torch.no_grad()
def score_variant(layout: RunLayout, variant: Variant, dataset: Dataset, rows: Interactions) -> np.ndarray:
    """(N,) click probabilities of ``rows`` by the run's trained ``variant``, scored as stage 3 scores its test split."""
    ctr_dir = layout.ctr_dir(variant)
    if not (ctr_dir / SPEC_FILE).exists():
        raise MissingInputError(f"{ctr_dir}: no trained {variant} model; run `larr train ctr --out {layout.root}` with "
                                f"{variant} in ctr.variants (trained here: {[v.value for v in trained_variants(layout)]})")
    model, vocab = LarrCTR.load(ctr_dir)
    features = dataset.info.scene_features
    if tuple(model.spec.field_names[2:]) != features:
        raise UsageError(f"{ctr_dir}: trained on scene features {model.spec.field_names[2:]}, the dataset has "
                         f"{list(features)}; pass the run's own dataset (--data)")
    codes, table = None, None
    if variant.uses_llm:
        embedder, tokenizer = load_frozen_embedder(layout.root, variant.embedder_source)
        split_codes, distinct = scene_text_codes(features, {"rows": rows}, variant.whole_scene)
        codes = split_codes["rows"]
        table = torch.from_numpy(embed_texts(embedder, tokenizer, distinct, EMBED_BATCH_SIZE))  # (V, D)
    return predict(model, split_tensors(FieldVocab.from_dict(vocab), rows, codes), table)


def evaluate(run: Path, split: str, segment: Segment = Segment(), variants: list[Variant] | None = None,
             data: Path | None = None) -> tuple[dict[str, dict], Interactions, np.ndarray, dict[str, np.ndarray]]:
    """Metrics per variant on the segment of ``split``: ``{variant: {"n", "clicks", "auc", "logloss", "gauc"}}``;
    also the selected rows, their indices in the split, and each variant's (N,) probabilities."""
    layout = RunLayout(run)
    if not layout.root.is_dir():
        raise MissingInputError(f"{run}: no such run folder; make one with `larr train all --out {run}`")
    if data is None:
        data = layout.dataset_dir()
        if data is None:
            raise MissingInputError(f"{layout.config_file}: names no dataset that exists here; pass --data DIR")
    dataset = load_dataset(data)
    variants = variants or trained_variants(layout)
    if not variants:
        raise MissingInputError(f"{layout.stage_dir('ctr')}: no trained CTR model; run `larr train ctr --out {run}`")
    indices = select_rows(dataset, split, segment)
    if len(indices) == 0:
        raise UsageError(f"no row of the {split} split matches {segment.describe()}")
    rows = dataset.splits[split].subset(indices)
    scores = {v.value: score_variant(layout, v, dataset, rows) for v in variants}
    metrics = {
        name: {"n": len(rows), "clicks": int(rows.label.sum()), **ctr_metrics(rows.user_id, rows.label, probabilities)}
        for name, probabilities in scores.items()
    }
    return metrics, rows, indices, scores


def write_scores(path: Path, rows: Interactions, indices: np.ndarray, scores: dict[str, np.ndarray]) -> None:
    """One CSV line per selected row: its index in the split (0 = the first data line), ids, label, probabilities."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "user_id", "item_id", "label", *scores])
        for n, index in enumerate(indices):
            probabilities = [f"{scores[name][n]:.7g}" for name in scores]
            writer.writerow([int(index), int(rows.user_id[n]), int(rows.item_id[n]), int(rows.label[n]), *probabilities])


def _evaluate_args(args: argparse.Namespace):
    """``evaluate`` on what the shared selection flags (training/cli.py) ask for; returns it and the segment."""
    unseen_in = None
    if args.held_out_scenes is not None:  # the flag alone gives "": every scene feature
        unseen_in = tuple(f.strip() for f in args.held_out_scenes.split(",") if f.strip())
    segment = Segment(tuple(parse_where(text) for text in args.where),
                      read_user_ids(args.users) if args.users else None, unseen_in)
    variants = [Variant.parse(v) for v in args.variant or ()]
    return evaluate(args.run, args.split, segment, variants, args.data), segment


def run_predict(args: argparse.Namespace) -> int:
    """``larr predict``: the selected rows' probabilities per variant, written to ``args.out``."""
    (_, rows, indices, scores), segment = _evaluate_args(args)
    write_scores(args.out, rows, indices, scores)
    print(f"wrote {args.out}: {len(rows)} rows of the {args.split} split ({segment.describe()}), "
          f"variants {', '.join(scores)}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    (metrics, rows, indices, scores), segment = _evaluate_args(args)
    if args.scores:
        write_scores(args.scores, rows, indices, scores)
    if args.json:
        print(json.dumps({"run": str(args.run), "split": args.split, "segment": segment.describe(), "metrics": metrics}))
        return 0
    print(f"{args.run}, {args.split} split, {segment.describe()}: {len(rows)} rows, {int(rows.label.sum())} clicks")
    print(f"  {'variant':<13} {'N':>8}  {'AUC':>7}  {'logloss':>7}  {'GAUC':>7}")
    for name, result in metrics.items():
        print(f"  {name:<13} {result['n']:>8}  {result['auc']:>7.4f}  {result['logloss']:>7.4f}  {result['gauc']:>7.4f}")
    if args.scores:
        print(f"wrote {args.scores}")
    return 0
