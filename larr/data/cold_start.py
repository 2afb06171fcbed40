"""A cold-start scene split: some scene values never reach training, so a model meets them first at test time.

Usage (on Frappe, the research-only data: write under ``runs/`` or /tmp, never into the repo)::

    larr data frappe --out runs/frappe-cold/data --cold-start-share 0.5 --cold-start-fields daytime,weather \\
        --cold-start-seed 2024

or from Python: ``split, report = cold_start_split(dataset, ColdStartSpec(("weather",), 0.2, seed=2024))`` on any
dataset of :mod:`larr.data.schema`, and :func:`write_cold_start` to write it.

What it does, deterministic for a seed:

1. **Draw.** For each field of ``spec.fields`` (in the dataset's scene-feature order), the candidate values are the
   field's distinct texts over all splits except placeholders (:data:`PLACEHOLDER_TEXTS`, e.g. ``"unknown"``: a
   value that says nothing cannot show that a model understands it) and values on more than
   ``spec.max_value_share`` of all rows (a new value is a tail value), sorted; ``max(1, round(share * n))`` of
   them are drawn without replacement with ``numpy.random.default_rng(seed)``. The field's head values stay seen.
2. **Move.** Every train or valid row with a drawn value moves to test (valid rows first, then train rows, each in
   split order, after the original test rows). Moved, not dropped: a split's test part alone would hold only a
   tenth of the held-out rows, and the moved rows follow the same law as the test rows (on Frappe the train
   negatives are re-sampled by the protocol that made the test ones). The test split grows; ``report`` counts it.
3. **Close.** A seen value can vanish from train when all its train rows also carried a drawn value (a rare
   country seen only on drizzly days). Such values of ``spec.fields`` are held out too (``vanished``), and the
   valid rows with them move to test as well; train is unchanged by this step, so it needs no second round.

Afterwards no train or valid row has a held-out value, and a test row is **marked** exactly when one of its
``spec.fields`` values is held out — which is the same as "a value of ``spec.fields`` no train row has", the slice
``larr evaluate --held-out-scenes FIELDS`` scores on any dataset. Users are not held out: a user whose every row
moved is new to train; the report counts the marked rows of such users.

Written beside the dataset: :data:`REPORT_FILE` (the spec, the held-out values, the row counts) and
:data:`MARKS_FILE` (one line per test row: ``row,origin,held_out_fields``; origin is the split the row came from,
``held_out_fields`` the ``;``-joined fields whose value is held out, empty when none).
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from larr.data.frappe import convert_frappe
from larr.data.schema import SPLITS, Dataset, Interactions, write_dataset
from larr.errors import DataValidationError, UsageError

REPORT_FILE = "cold_start.json"
MARKS_FILE = "test_marks.csv"
MARKS_COLUMNS = ("row", "origin", "held_out_fields")
#: scene texts that carry no meaning, never held out (Frappe writes its unknown city code as "unknown city")
PLACEHOLDER_TEXTS = frozenset({"unknown", "unknown city", ""})


@dataclass(frozen=True)
class ColdStartSpec:
    """Which scene fields lose a share of their values, and the seed of the draw."""

    fields: tuple[str, ...]
    share: float = field(metadata={"help": "share of each field's non-placeholder values held out, in (0, 1)"})
    seed: int = 2024
    max_value_share: float = field(default=0.1, metadata={
        "help": "a value on more than this share of all rows is never held out: cold-start values are tail values, "
                "and one head value (Frappe's 'cloudy' is on 42 % of rows) would move half the data to test"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        if not self.fields:
            raise UsageError("cold start: name at least one scene field (--cold-start-fields)")
        if len(set(self.fields)) != len(self.fields):
            raise UsageError(f"cold start: fields repeat: {list(self.fields)}")
        if not 0.0 < self.share < 1.0:
            raise UsageError(f"cold start: the share must be in (0, 1), got {self.share} (--cold-start-share)")
        if not 0.0 < self.max_value_share <= 1.0:
            raise UsageError(f"cold start: the largest held-out value's row share must be in (0, 1], got "
                             f"{self.max_value_share} (--cold-start-max-value-share)")


@dataclass
class ColdStartReport:
    """What :func:`cold_start_split` held out and moved (written as :data:`REPORT_FILE`)."""

    spec: ColdStartSpec
    drawn: dict[str, list[str]]  # field -> values drawn in step 1
    vanished: dict[str, list[str]]  # field -> values held out in step 3
    rows: dict[str, dict[str, int]]  # split -> counts ("before", "after", "moved" / "marked", ...)
    origin: list[str]  # per test row: the split it came from
    marked_fields: list[list[str]]  # per test row: its fields whose value is held out
    tuning_of: dict | None = None  # a tuning split's outer split: {"seed", "held_out"}

    @property
    def held_out(self) -> dict[str, list[str]]:
        return {f: sorted({*self.drawn[f], *self.vanished[f]}) for f in self.spec.fields}

    def to_json(self) -> dict:
        return {
            "fields": list(self.spec.fields), "share": self.spec.share, "seed": self.spec.seed,
            "held_out": self.held_out, "drawn": self.drawn, "vanished": self.vanished, "rows": self.rows,
            **({"tuning_of": self.tuning_of} if self.tuning_of else {}),
        }


def draw_held_out(dataset: Dataset, spec: ColdStartSpec) -> dict[str, list[str]]:
    """Step 1: per field of ``spec``, the drawn values (sorted). Raises :class:`UsageError` on an unknown field or
    a field with fewer than two candidate values."""
    features = dataset.info.scene_features
    unknown = [f for f in spec.fields if f not in features]
    if unknown:
        raise UsageError(f"cold start: no scene field(s) {unknown}; the dataset has {list(features)}")
    rng = np.random.default_rng(spec.seed)
    drawn = {}
    for k, feature in enumerate(features):
        if feature not in spec.fields:
            continue
        counts = Counter(t for rows in dataset.splits.values() for t in rows.scene[k])
        total = sum(counts.values())
        small = [t for t, c in counts.items() if c <= spec.max_value_share * total and t not in PLACEHOLDER_TEXTS]
        candidates = sorted(small)
        if not candidates or len(candidates) == len(counts):
            raise UsageError(f"cold start: field {feature!r} has {len(candidates)} value(s) that may be held out of "
                             f"{len(counts)} (placeholders and values on more than {spec.max_value_share:.0%} of the "
                             "rows stay seen), so it cannot lose some and keep some")
        count = max(1, round(spec.share * len(candidates)))
        picks = rng.choice(len(candidates), size=count, replace=False)
        drawn[feature] = sorted(candidates[i] for i in picks)
    return {f: drawn[f] for f in spec.fields}


def held_out_fields(rows: Interactions, features: tuple[str, ...], held_out: dict[str, list[str]]) -> list[list[str]]:
    """Per row, the fields (in ``held_out``'s order) whose value is one of ``held_out[field]``."""
    columns = [(f, rows.scene[features.index(f)], set(values)) for f, values in held_out.items()]
    return [[f for f, column, values in columns if column[n] in values] for n in range(len(rows))]


def concat(parts: list[Interactions]) -> Interactions:
    """The rows of ``parts`` one after the other (every part has the same scene features)."""
    return Interactions(
        user_id=np.concatenate([p.user_id for p in parts]),
        item_id=np.concatenate([p.item_id for p in parts]),
        label=np.concatenate([p.label for p in parts]),
        timestamp=np.concatenate([p.timestamp for p in parts]),
        scene=[[t for p in parts for t in p.scene[k]] for k in range(len(parts[0].scene))],
    )


def _vanished(train: Interactions, others: list[Interactions], features: tuple[str, ...],
              fields: tuple[str, ...], drawn: dict[str, list[str]]) -> dict[str, list[str]]:
    """Step 3: per field, the values some other split has, no train row has, and the draw did not pick."""
    out = {}
    for feature in fields:
        k = features.index(feature)
        seen = set(train.scene[k])
        elsewhere = {t for rows in others for t in rows.scene[k]}
        out[feature] = sorted(elsewhere - seen - set(drawn[feature]))
    return out


def _split_by_mask(rows: Interactions, marks: list[list[str]]) -> tuple[Interactions, Interactions]:
    """(rows without a held-out value, rows with one)."""
    moved = np.asarray([bool(m) for m in marks], dtype=bool)
    return rows.subset(np.flatnonzero(~moved)), rows.subset(np.flatnonzero(moved))


def cold_start_split(dataset: Dataset, spec: ColdStartSpec) -> tuple[Dataset, ColdStartReport]:
    """The cold-start version of ``dataset`` (see the module docstring) and its report. ``dataset`` is not changed."""
    missing = [s for s in SPLITS if s not in dataset.splits]
    if missing:
        raise DataValidationError(f"cold start: the dataset lacks split(s) {missing}")
    features = dataset.info.scene_features
    drawn = draw_held_out(dataset, spec)
    train, from_train = _split_by_mask(dataset.train, held_out_fields(dataset.train, features, drawn))
    vanished = _vanished(train, [dataset.valid, dataset.test, from_train], features, spec.fields, drawn)
    held_out = {f: sorted({*drawn[f], *vanished[f]}) for f in spec.fields}
    valid, from_valid = _split_by_mask(dataset.valid, held_out_fields(dataset.valid, features, held_out))
    test = concat([dataset.test, from_valid, from_train])
    if not len(train) or not len(valid):
        raise UsageError(f"cold start: share {spec.share} of {list(spec.fields)} leaves no train or valid row")
    marks = held_out_fields(test, features, held_out)
    origin = ["test"] * len(dataset.test) + ["valid"] * len(from_valid) + ["train"] * len(from_train)
    marked = np.asarray([bool(m) for m in marks], dtype=bool)
    new_user = ~np.isin(test.user_id, train.user_id)
    rows = {
        "train": {"before": len(dataset.train), "after": len(train), "moved_to_test": len(from_train)},
        "valid": {"before": len(dataset.valid), "after": len(valid), "moved_to_test": len(from_valid)},
        "test": {"before": len(dataset.test), "after": len(test), "marked": int(marked.sum()),
                 "marked_positives": int(test.label[marked].sum()),
                 "marked_of_original_test": int(marked[: len(dataset.test)].sum()),
                 "marked_of_users_new_to_train": int((marked & new_user).sum())},
    }
    split = Dataset(info=dataset.info, items=dataset.items, splits={"train": train, "valid": valid, "test": test},
                    knowledge=dataset.knowledge, history=dataset.history)
    return split, ColdStartReport(spec, drawn, vanished, rows, origin, marks)


def tuning_split(split: Dataset, spec: ColdStartSpec) -> tuple[Dataset, ColdStartReport]:
    """A split for choosing design levers without reading ``split``'s test rows: its test split is left out and a
    second draw (``spec``, another seed) among the values train/valid still have moves rows from train and valid
    into a new test split, all of whose rows are then marked. Its valid split is the "seen" check, its test split
    the "held-out" one; every row of both comes from ``split``'s train or valid split."""
    none = split.test.subset(np.arange(0))
    outer = Dataset(info=split.info, items=split.items, splits={"train": split.train, "valid": split.valid, "test": none},
                    knowledge=split.knowledge, history=split.history)
    return cold_start_split(outer, spec)


def write_cold_start(out_dir: Path, dataset: Dataset, report: ColdStartReport) -> None:
    """Write the dataset, :data:`REPORT_FILE` and :data:`MARKS_FILE` to ``out_dir``, through a sibling
    ``.partial`` folder renamed at the end: a folder with a ``dataset.json`` is always a whole cold-start split."""
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_dataset(partial, dataset)
    (partial / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    with (partial / MARKS_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MARKS_COLUMNS)
        for n, (origin, fields) in enumerate(zip(report.origin, report.marked_fields)):
            writer.writerow([n, origin, ";".join(fields)])
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)


def read_marks(data_dir: Path) -> tuple[np.ndarray, list[str]]:
    """(marked (N,) bool, origin per row) of a cold-start dataset's test split, from :data:`MARKS_FILE`."""
    path = Path(data_dir) / MARKS_FILE
    if not path.exists():
        raise DataValidationError(f"{path}: missing; is {data_dir} a cold-start split (larr data frappe --cold-start-share)?")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return np.asarray([bool(r["held_out_fields"]) for r in rows], dtype=bool), [r["origin"] for r in rows]


def convert_frappe_cold_start(raw_dir: Path, out_dir: Path, spec: ColdStartSpec, seed: int = 2024,
                              limit_users: int | None = None, tuning_seed: int | None = None,
                              ) -> tuple[Dataset, ColdStartReport]:
    """The standard Frappe conversion (:func:`larr.data.frappe.convert_frappe`, train negatives with ``seed``),
    then its cold-start split, written to ``out_dir``; with ``tuning_seed``, that split's :func:`tuning_split`
    (the same fields and share, drawn with ``tuning_seed``) instead."""
    with tempfile.TemporaryDirectory(prefix="frappe-standard-") as scratch:
        standard = convert_frappe(Path(raw_dir), Path(scratch), seed=seed, limit_users=limit_users)
    split, report = cold_start_split(standard, spec)
    if tuning_seed is not None:
        outer = {"seed": spec.seed, "held_out": report.held_out}
        split, report = tuning_split(split, ColdStartSpec(spec.fields, spec.share, tuning_seed, spec.max_value_share))
        report.tuning_of = outer
    write_cold_start(out_dir, split, report)
    return split, report


# --------------------------------------------------------------------------------------------- command line

#: Frappe's default cold-start fields: the scene fields whose values are words a text model can relate to seen ones
#: ("sunrise" / "morning", "drizzle" / "rainy"). Left out: city (integer codes), country (a user's rows carry one
#: country for 4 users in 5, so holding a country out holds its users out: a user cold start, which
#: ``--where user_seen=0`` measures), weekday (its meaning is isweekend's, which stays seen), and the two- or
#: three-valued isweekend, homework and cost (one value is a third to a half of the data, or a placeholder).
FRAPPE_COLD_START_FIELDS = ("daytime", "weather")


def configure_cold_start_flags(parser) -> None:
    """The ``larr data frappe --cold-start-*`` flags (an argparse parser); :func:`spec_from_args` reads them."""
    add = parser.add_argument
    add("--cold-start-share", type=float, default=None, metavar="S",
        help="write a cold-start scene split instead: hold out this share of each field's tail values (see "
        "larr.data.cold_start); train/valid rows with one move to test, marked in test_marks.csv")
    add("--cold-start-fields", default=None, metavar="A,B",
        help=f"scene fields that lose values (default {','.join(FRAPPE_COLD_START_FIELDS)})")
    add("--cold-start-seed", type=int, default=None, metavar="N", help="seed of the draw (default 2024)")
    add("--cold-start-max-value-share", type=float, default=None, metavar="X",
        help="values on more than this share of the rows stay seen (default 0.1)")
    add("--cold-start-tuning-seed", type=int, default=None, metavar="M",
        help="write the split's tuning version instead: its test rows left out, a second draw (seed M) moves "
        "train/valid rows into a new, all held-out test split, for choosing design levers without the test split")


def spec_from_args(args) -> ColdStartSpec | None:
    """The spec the flags ask for, or None without ``--cold-start-share`` (then no other cold-start flag may be set)."""
    given = {name: getattr(args, name) for name in ("cold_start_fields", "cold_start_seed", "cold_start_max_value_share",
                                                    "cold_start_tuning_seed")}
    if args.cold_start_share is None:
        stray = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
        if stray:
            raise UsageError(f"{', '.join(stray)}: only with --cold-start-share")
        return None
    fields = given["cold_start_fields"]
    return ColdStartSpec(
        fields=tuple(f.strip() for f in fields.split(",") if f.strip()) if fields else FRAPPE_COLD_START_FIELDS,
        share=args.cold_start_share,
        seed=2024 if given["cold_start_seed"] is None else given["cold_start_seed"],
        max_value_share=0.1 if given["cold_start_max_value_share"] is None else given["cold_start_max_value_share"],
    )


def describe(report: ColdStartReport) -> str:
    """Two lines for the terminal: what was held out, and where the rows went."""
    held = "; ".join(f"{f}: {', '.join(v)}" for f, v in report.held_out.items())
    rows, test = report.rows, report.rows["test"]
    return (f"held out (seed {report.spec.seed}, share {report.spec.share}) {held}\n"
            f"train {rows['train']['after']} (moved {rows['train']['moved_to_test']}), valid {rows['valid']['after']} "
            f"(moved {rows['valid']['moved_to_test']}), test {test['after']} of which {test['marked']} marked "
            f"({test['marked_of_original_test']} of the original test rows)")
