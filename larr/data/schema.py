"""The on-disk dataset schema, its loader and its validation.

A dataset is a folder::

    dataset.json        {"name": str, "scene_features": [str, ...], "num_users": int, "num_items": int}
    items.csv           item_id,name,category,description
    train.csv           user_id,item_id,label,timestamp,<scene feature 1>,...,<scene feature K>
    valid.csv           same columns as train.csv
    test.csv            same columns as train.csv
    knowledge.txt       optional: extra plain-text documents for the stage-1 corpus, one per line
    history.csv         optional: user_id,position,item_id,<context feature 1>,... — each user's past choices
                        (position 0 = oldest) and the context value of each; the context features are a subset of
                        the scene features, spelled as canonical values (e.g. weather "rain"), not paraphrases
    context_lexicon.csv optional, with history.csv: feature,text,value — the canonical context value of a scene
                        text (a scene text it does not list is its own value)

Rules (checked on load, errors name the file, line and column):

* ids are integers in ``[0, num_users)`` / ``[0, num_items)``; every interaction's item is in items.csv;
* ``label`` is 0 or 1; ``timestamp`` is an integer or empty;
* every scene feature named in dataset.json is a column, its text is non-empty UTF-8;
* scene feature names are Python identifiers (``time_of_day``, not ``time of day``): a name becomes the special
  tokens ``<scene_NAME>`` / ``</scene_NAME>`` around every text the LLM reads, and the key of
  ``larr query --scene NAME=TEXT``; an identifier has no space, ``<``, ``>``, ``/`` or ``=`` to make either ambiguous;
* a column the header has but dataset.json does not declare is ignored, with a :class:`~larr.errors.DataWarning`
  naming it (a scene feature left out of ``scene_features`` would otherwise vanish silently).

CSV is the format (RFC 4180 quoting, UTF-8, header row). Loading is pure Python + NumPy (no torch).
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from larr.errors import DataValidationError, DataWarning, MissingInputError

SPLITS = ("train", "valid", "test")
INTERACTION_ID_COLUMNS = ("user_id", "item_id", "label", "timestamp")
ITEM_COLUMNS = ("item_id", "name", "category", "description")
ITEMS_FILE = "items.csv"
HISTORY_FILE = "history.csv"
LEXICON_FILE = "context_lexicon.csv"
HISTORY_ID_COLUMNS = ("user_id", "position", "item_id")
LEXICON_COLUMNS = ("feature", "text", "value")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    scene_features: tuple[str, ...]
    num_users: int
    num_items: int

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "scene_features": list(self.scene_features),
            "num_users": self.num_users,
            "num_items": self.num_items,
        }


@dataclass
class Items:
    """Item table, row ``i`` is item id ``i`` (ids are dense)."""

    name: list[str]
    category: list[str]
    description: list[str]

    def __len__(self) -> int:
        return len(self.name)


@dataclass
class Interactions:
    """One split. ``scene[k][n]`` is the text of scene feature ``k`` in row ``n``."""

    user_id: np.ndarray  # (N,) int64
    item_id: np.ndarray  # (N,) int64
    label: np.ndarray  # (N,) float32, 0/1
    timestamp: np.ndarray  # (N,) int64, -1 when absent
    scene: list[list[str]]  # K lists of N texts

    def __len__(self) -> int:
        return len(self.user_id)

    def scene_row(self, n: int) -> list[str]:
        return [column[n] for column in self.scene]

    def subset(self, rows: np.ndarray) -> "Interactions":
        return Interactions(
            user_id=self.user_id[rows],
            item_id=self.item_id[rows],
            label=self.label[rows],
            timestamp=self.timestamp[rows],
            scene=[[column[i] for i in rows] for column in self.scene],
        )


@dataclass
class History:
    """Every user's long history of past choices (``history.csv``), rows sorted by (user, position).

    ``context[k][n]`` is the canonical value of context feature ``context_features[k]`` at event ``n``;
    ``lexicon[(feature, text)]`` maps a scene text of the interaction splits to such a value (see
    :meth:`context_value`).
    """

    user_id: np.ndarray  # (H,) int64
    position: np.ndarray  # (H,) int64, 0 = the user's oldest event
    item_id: np.ndarray  # (H,) int64
    context_features: tuple[str, ...]
    context: list[list[str]]  # len(context_features) lists of H values
    lexicon: dict[tuple[str, str], str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user_id)

    def context_value(self, feature: str, text: str) -> str:
        """The canonical value of a scene text; a text the lexicon does not list is its own value."""
        return self.lexicon.get((feature, text), text)


@dataclass
class Dataset:
    info: DatasetInfo
    items: Items
    splits: dict[str, Interactions]
    knowledge: list[str] = field(default_factory=list)
    history: History | None = None  # only when the folder has history.csv

    @property
    def train(self) -> Interactions:
        return self.splits["train"]

    @property
    def valid(self) -> Interactions:
        return self.splits["valid"]

    @property
    def test(self) -> Interactions:
        return self.splits["test"]


def interaction_columns(scene_features: tuple[str, ...] | list[str]) -> list[str]:
    return [*INTERACTION_ID_COLUMNS, *scene_features]


# --------------------------------------------------------------------------------------------- loading


def load_dataset_info(root: str | Path) -> DatasetInfo:
    path = Path(root) / "dataset.json"
    if not path.exists():
        raise MissingInputError(
            f"{path}: missing (is {root} a dataset folder? make the synthetic one with `larr data synth --out {root}`, "
            "or name yours with `larr train --data DIR`)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataValidationError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    for key, kind in (("name", str), ("scene_features", list), ("num_users", int), ("num_items", int)):
        if not isinstance(raw.get(key), kind):
            raise DataValidationError(f"{path}: field '{key}' must be a {kind.__name__}")
    features = tuple(raw["scene_features"])
    if not features or not all(isinstance(f, str) for f in features):
        raise DataValidationError(f"{path}: 'scene_features' must be a non-empty list of names")
    bad = [f for f in features if not f.isidentifier()]
    if bad:
        # they become the special tokens <scene_NAME> and the keys of `larr query --scene NAME=TEXT`
        suggestion = "_".join("".join(c if c.isalnum() else " " for c in bad[0]).split()) or "a_name"
        raise DataValidationError(
            f"{path}: scene feature name(s) {bad} are not identifiers (letters, digits, '_'; not starting with a "
            f"digit), e.g. {suggestion!r}; rename the CSV columns to match"
        )
    if len(set(features)) != len(features):
        raise DataValidationError(f"{path}: 'scene_features' has duplicates")
    reserved = set(INTERACTION_ID_COLUMNS) & set(features)
    if reserved:
        raise DataValidationError(f"{path}: scene feature names {sorted(reserved)} clash with id columns")
    return DatasetInfo(raw["name"], features, raw["num_users"], raw["num_items"])


def load_dataset(root: str | Path, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Load and validate a dataset folder. Raises :class:`DataValidationError` naming file/line/column."""
    root = Path(root)
    info = load_dataset_info(root)
    items = load_items(root / ITEMS_FILE, info.num_items)
    loaded = {split: load_interactions(root / f"{split}.csv", info) for split in splits}
    knowledge_path = root / "knowledge.txt"
    knowledge = []
    if knowledge_path.exists():
        knowledge = [line.strip() for line in knowledge_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    history = load_history(root, info) if (root / HISTORY_FILE).exists() else None
    return Dataset(info=info, items=items, splits=loaded, knowledge=knowledge, history=history)


def load_history(root: Path, info: DatasetInfo) -> History:
    """``history.csv`` (and ``context_lexicon.csv`` when present); its context columns are the scene features
    its header names, in dataset.json's order."""
    path = root / HISTORY_FILE
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None) or []
    features = tuple(f for f in info.scene_features if f in header)
    if not features:
        raise DataValidationError(f"{path}: line 1: no context column; name at least one of {list(info.scene_features)}")
    users, positions, items = [], [], []
    context: list[list[str]] = [[] for _ in features]
    for line, row in _read_rows(path, [*HISTORY_ID_COLUMNS, *features]):
        users.append(_parse_int(path, line, "user_id", row["user_id"], 0, info.num_users))
        positions.append(_parse_int(path, line, "position", row["position"], 0, None))
        items.append(_parse_int(path, line, "item_id", row["item_id"], 0, info.num_items))
        for k, feature in enumerate(features):
            context[k].append(row[feature])
    order = np.lexsort((np.asarray(positions), np.asarray(users)))  # by user, then position
    lexicon = {}
    if (root / LEXICON_FILE).exists():
        lexicon = {(row["feature"], row["text"]): row["value"] for _, row in _read_rows(root / LEXICON_FILE, list(LEXICON_COLUMNS))}
    return History(
        user_id=np.asarray(users, dtype=np.int64)[order],
        position=np.asarray(positions, dtype=np.int64)[order],
        item_id=np.asarray(items, dtype=np.int64)[order],
        context_features=features,
        context=[[column[i] for i in order] for column in context],
        lexicon=lexicon,
    )


def _read_rows(path: Path, expected_columns: list[str]):
    """Yield (line_number, row dict) after checking the header; errors name the file and line."""
    if not path.exists():
        raise DataValidationError(f"{path}: missing")
    try:
        handle = path.open(newline="", encoding="utf-8")
        with handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataValidationError(f"{path}: empty file, expected header {','.join(expected_columns)}")
            missing = [c for c in expected_columns if c not in header]
            if missing:
                raise DataValidationError(f"{path}: line 1: missing column(s) {missing}; header is {header}")
            undeclared = [name for name in header if name not in expected_columns]
            if undeclared:
                warnings.warn(
                    f"{path}: column(s) {undeclared} not declared in dataset.json, ignored "
                    f"(a scene feature must be listed in 'scene_features')",
                    DataWarning, stacklevel=3,
                )
            index = {name: header.index(name) for name in expected_columns}
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataValidationError(
                        f"{path}: line {line}: {len(row)} fields, the header has {len(header)}"
                    )
                yield line, {name: row[i] for name, i in index.items()}
    except UnicodeDecodeError as err:
        raise DataValidationError(f"{path}: not valid UTF-8 at byte {err.start}") from None
    except csv.Error as err:
        raise DataValidationError(f"{path}: CSV error: {err}") from None


def _parse_int(path: Path, line: int, column: str, value: str, low: int, high: int | None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DataValidationError(f"{path}: line {line}: column '{column}': '{value}' is not an integer") from None
    if number < low or (high is not None and number >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise DataValidationError(f"{path}: line {line}: column '{column}': {number} is outside {bound}")
    return number


def load_items(path: Path, num_items: int) -> Items:
    names: list[str | None] = [None] * num_items
    categories: list[str] = [""] * num_items
    descriptions: list[str] = [""] * num_items
    for line, row in _read_rows(path, list(ITEM_COLUMNS)):
        item = _parse_int(path, line, "item_id", row["item_id"], 0, num_items)
        if names[item] is not None:
            raise DataValidationError(f"{path}: line {line}: column 'item_id': duplicate id {item}")
        if not row["name"].strip():
            raise DataValidationError(f"{path}: line {line}: column 'name': empty")
        names[item] = row["name"]
        categories[item] = row["category"]
        descriptions[item] = row["description"]
    absent = [i for i, n in enumerate(names) if n is None]
    if absent:
        raise DataValidationError(
            f"{path}: {len(absent)} of {num_items} item ids have no row (first: {absent[0]}); every id in "
            f"[0, num_items) needs one (num_items is dataset.json's; give an unnamed item a placeholder name)"
        )
    return Items(name=[str(n) for n in names], category=categories, description=descriptions)


def load_interactions(path: Path, info: DatasetInfo) -> Interactions:
    users, items, labels, stamps = [], [], [], []
    scene: list[list[str]] = [[] for _ in info.scene_features]
    for line, row in _read_rows(path, interaction_columns(info.scene_features)):
        users.append(_parse_int(path, line, "user_id", row["user_id"], 0, info.num_users))
        items.append(_parse_int(path, line, "item_id", row["item_id"], 0, info.num_items))
        if row["label"] not in ("0", "1"):
            raise DataValidationError(f"{path}: line {line}: column 'label': '{row['label']}' is not 0 or 1")
        labels.append(float(row["label"]))
        stamps.append(_parse_int(path, line, "timestamp", row["timestamp"], 0, None) if row["timestamp"] else -1)
        for k, feature in enumerate(info.scene_features):
            text = row[feature]
            if not text.strip():
                raise DataValidationError(f"{path}: line {line}: column '{feature}': empty scene text")
            scene[k].append(text)
    if not users:
        raise DataValidationError(f"{path}: no rows")
    return Interactions(
        user_id=np.asarray(users, dtype=np.int64),
        item_id=np.asarray(items, dtype=np.int64),
        label=np.asarray(labels, dtype=np.float32),
        timestamp=np.asarray(stamps, dtype=np.int64),
        scene=scene,
    )


# --------------------------------------------------------------------------------------------- writing


def write_dataset(root: str | Path, dataset: Dataset) -> None:
    """Write ``dataset`` in the schema above (used by generators and converters)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(dataset.info.to_json(), indent=2) + "\n", encoding="utf-8")
    with (root / ITEMS_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(ITEM_COLUMNS)
        for i in range(len(dataset.items)):
            writer.writerow([i, dataset.items.name[i], dataset.items.category[i], dataset.items.description[i]])
    for split, rows in dataset.splits.items():
        with (root / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(interaction_columns(dataset.info.scene_features))
            for n in range(len(rows)):
                stamp = "" if rows.timestamp[n] < 0 else int(rows.timestamp[n])
                writer.writerow(
                    [int(rows.user_id[n]), int(rows.item_id[n]), int(rows.label[n]), stamp, *rows.scene_row(n)]
                )
    if dataset.knowledge:
        (root / "knowledge.txt").write_text("\n".join(dataset.knowledge) + "\n", encoding="utf-8")
    if dataset.history is not None:
        _write_history(root, dataset.history)


def _write_history(root: Path, history: History) -> None:
    with (root / HISTORY_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*HISTORY_ID_COLUMNS, *history.context_features])
        for n in range(len(history)):
            values = [column[n] for column in history.context]
            writer.writerow([int(history.user_id[n]), int(history.position[n]), int(history.item_id[n]), *values])
    if history.lexicon:
        with (root / LEXICON_FILE).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(LEXICON_COLUMNS)
            for (feature, text), value in history.lexicon.items():
                writer.writerow([feature, text, value])
