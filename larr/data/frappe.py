"""Convert the Frappe context-aware app-usage log to the project's dataset schema, with BARS's Frappe_x1 split.

Usage (the data is research-only: write the output under /tmp or another private path, never into the repo)::

    python -m larr.data.frappe ../shared/data/frappe /tmp/frappe              # full data set, ~5 s
    python -m larr.data.frappe ../shared/data/frappe /tmp/frappe_small --limit-users 50

or from Python: ``convert_frappe(Path("../shared/data/frappe"), Path("/tmp/frappe"))``.

Input (see ``SOURCE.md`` next to the data): ``frappe.csv`` (the log, 96,203 rows, every row a positive),
``meta.csv`` (4,082 apps) and ``nfm_split/frappe.{validation,test}.libfm`` (the NFM/BARS *Frappe_x1* split).

Output: the schema of :mod:`larr.data.schema` (``dataset.json`` name ``"frappe"``), with

* items: every app, ``item_id`` = ``meta.item``; description = short description + long description
  (the short one is dropped when the long one already starts with it, as it mostly does); whitespace collapsed.
  The 550 apps whose metadata is all ``"unknown"`` are named ``"unknown app <id>"`` with category ``"unknown"``
  and an empty description — nothing that pretends to know what the app is;
* scene features, in order: daytime, weekday, isweekend, homework, cost, weather, country, city — the raw texts,
  except that city (an integer code; the authors withheld names) is written ``"city 17"``, and code 0 as
  ``"unknown city"``;
* ``user_id`` = the raw user id (dense 0..956); no timestamps (Frappe has none).

**valid/test** are decoded exactly from the libFM files: fields come in the order of :data:`FIELDS`, each at an
offset equal to the number of distinct values of the fields before it, and within a field
``index = offset + rank of the value's first appearance in frappe.csv row order``; label -1 becomes 0.
That gives valid 57,722 rows (19,063 positives) and test 28,860 (9,536), as in the BARS logs.

**train** — the NFM/BARS train file is not available, so it is rebuilt by the original protocol:

* positives: the raw rows minus the valid/test positives, as a multiset keyed by (user, item, context)
  → 67,604 rows (``cnt`` is dropped: every row is one positive);
* negatives: the original made 2 negatives per raw row (3 × 96,203 = 288,609 instances, then a random 7:2:1
  split), each keeping the row's user and context and swapping in an item that user never used anywhere in the
  log. Reading the held-out negatives closely pins the sampler down further: among valid+test's 57,983 negatives
  no (user, item) pair repeats, where independent uniform draws would give ~1,600 repeated pairs — so every user's
  negatives are *distinct* items, drawn uniformly without replacement from the items the user never used
  (feasible: every user has at least ``2 × rows`` items they never used).
  We reproduce exactly that: every (user, context) group of raw rows owns ``2 × rows`` negative slots; the
  held-out negatives of that group fill some of them (never more than its slots — checked); the rest are train
  negatives, ``2 × 96,203 − 38,659 − 19,324 = 134,423`` in all. Per user, the train negatives' items are drawn
  uniformly without replacement from the items the user never used minus that user's held-out negative items
  (the conditional law of the original sampler given the held-out part), with ``numpy.random.default_rng(seed)``,
  users in order of first appearance (= id order in Frappe). Train = 202,027 rows, shuffled with the same
  generator, like BARS's.

``limit_users=N`` keeps users ``0..N-1`` (all their rows in every split) for a quick smoke data set: the full
train set is built first and then filtered, so the subset is exactly the full data set's rows of those users.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from larr.data.schema import (
    Dataset,
    DatasetInfo,
    DataValidationError,
    Interactions,
    Items,
    write_dataset,
)

#: libFM field order of the NFM/BARS split; also the column order of :attr:`FrappeLog.codes`.
FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")
#: the context fields, written as the dataset's scene features (in this order).
SCENE_FEATURES = FIELDS[2:]
LOG_COLUMNS = ("user", "item", "cnt", *SCENE_FEATURES)
META_COLUMNS = ("item", "category", "description", "name", "short desc")
SPLIT_FILES = {"valid": "nfm_split/frappe.validation.libfm", "test": "nfm_split/frappe.test.libfm"}
NEGATIVES_PER_ROW = 2
UNKNOWN = "unknown"


@dataclass
class FrappeLog:
    """The raw log, every field coded by the rank of the value's first appearance (the libFM encoding).

    ``codes[n, f]`` is the code of field ``FIELDS[f]`` in row ``n``; ``values[f][code]`` is its raw text.
    """

    codes: np.ndarray  # (N, F) int64
    values: list[list[str]]  # F lists, value texts in order of first appearance

    @property
    def field_sizes(self) -> list[int]:
        return [len(v) for v in self.values]


# --------------------------------------------------------------------------------------------- reading


def _open_tsv(path: Path, expected: tuple[str, ...]):
    """Yield (line number, row dict) of a tab-separated file with a header; errors name file and line."""
    if not path.exists():
        raise DataValidationError(f"{path}: missing")
    csv.field_size_limit(sys.maxsize)  # meta.csv descriptions run to tens of kB
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            # QUOTE_NONE: the files are plain TSV and descriptions contain stray double quotes
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if header is None:
                raise DataValidationError(f"{path}: empty file, expected a header with {list(expected)}")
            missing = [c for c in expected if c not in header]
            if missing:
                raise DataValidationError(f"{path}: line 1: missing column(s) {missing}; header is {header}")
            index = {name: header.index(name) for name in expected}
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataValidationError(
                        f"{path}: line {reader.line_num}: {len(row)} fields, the header has {len(header)}"
                    )
                yield reader.line_num, {name: row[i] for name, i in index.items()}
    except UnicodeDecodeError as err:
        raise DataValidationError(f"{path}: not valid UTF-8 at byte {err.start}") from None


def _int_field(path: Path, line: int, column: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise DataValidationError(f"{path}: line {line}: column '{column}': '{text}' is not an integer") from None
    if value < 0:
        raise DataValidationError(f"{path}: line {line}: column '{column}': {value} is negative")
    return value


def read_log(path: Path) -> FrappeLog:
    """Read ``frappe.csv`` and code every field by first appearance. Raises :class:`DataValidationError`."""
    rank: list[dict[str, int]] = [{} for _ in FIELDS]
    rows: list[list[int]] = []
    for line, row in _open_tsv(path, LOG_COLUMNS):
        # user/item/city are integer codes: normalise their text so "07" and "7" cannot become two values
        for column in ("user", "item", "city", "cnt"):
            row[column] = str(_int_field(path, line, column, row[column]))
        coded = []
        for f, name in enumerate(FIELDS):
            text = row[name].strip()
            if not text:
                raise DataValidationError(f"{path}: line {line}: column '{name}': empty")
            coded.append(rank[f].setdefault(text, len(rank[f])))
        rows.append(coded)
    if not rows:
        raise DataValidationError(f"{path}: no rows")
    return FrappeLog(codes=np.asarray(rows, dtype=np.int64), values=[list(r) for r in rank])


def decode_libfm(path: Path, field_sizes: list[int] | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Decode an NFM libFM split file into (labels (N,) float32 0/1, codes (N, F) int64).

    Each line is ``label idx:1 ... idx:1`` with one index per field, fields in order, field ``f`` owning the
    index range ``[offset_f, offset_f + field_sizes[f])`` with ``offset_f = sum(field_sizes[:f])``; the code is
    ``index - offset_f``. Raises :class:`DataValidationError` naming file and line on anything else.
    """
    if not path.exists():
        raise DataValidationError(f"{path}: missing")
    offsets = np.concatenate([[0], np.cumsum(field_sizes)]).astype(np.int64)
    labels: list[float] = []
    codes: list[list[int]] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if tokens[0] not in ("1", "-1", "+1", "0"):
                raise DataValidationError(f"{path}: line {line_number}: label '{tokens[0]}' is not 1 or -1")
            if len(tokens) != len(field_sizes) + 1:
                raise DataValidationError(
                    f"{path}: line {line_number}: {len(tokens) - 1} features, expected {len(field_sizes)}"
                )
            row = []
            for f, token in enumerate(tokens[1:]):
                index_text, sep, value_text = token.partition(":")
                try:
                    index, value = int(index_text), float(value_text)
                except ValueError:
                    raise DataValidationError(
                        f"{path}: line {line_number}: feature {f + 1} '{token}' is not 'index:value'"
                    ) from None
                if not sep or value != 1.0:
                    raise DataValidationError(
                        f"{path}: line {line_number}: feature {f + 1} '{token}' is not a one-hot 'index:1'"
                    )
                if not offsets[f] <= index < offsets[f + 1]:
                    raise DataValidationError(
                        f"{path}: line {line_number}: feature {f + 1} index {index} is outside field "
                        f"'{FIELDS[f] if f < len(FIELDS) else f}' range [{offsets[f]}, {offsets[f + 1]})"
                    )
                row.append(index - int(offsets[f]))
            labels.append(1.0 if tokens[0] in ("1", "+1") else 0.0)
            codes.append(row)
    if not codes:
        raise DataValidationError(f"{path}: no rows")
    return np.asarray(labels, dtype=np.float32), np.asarray(codes, dtype=np.int64)


def _clean(text: str) -> str:
    """Collapse every whitespace run (tabs, newlines, no-break spaces) to one space."""
    return " ".join(text.split())


def read_items(path: Path) -> Items:
    """Read ``meta.csv`` into the item table (row i = app id i; ids must be dense)."""
    rows: dict[int, dict[str, str]] = {}
    for line, row in _open_tsv(path, META_COLUMNS):
        item = _int_field(path, line, "item", row["item"])
        if item in rows:
            raise DataValidationError(f"{path}: line {line}: column 'item': duplicate id {item}")
        rows[item] = row
    missing = sorted(set(range(len(rows))) - set(rows))
    if missing:
        raise DataValidationError(f"{path}: item ids are not dense 0..{len(rows) - 1} (first missing: {missing[0]})")
    names, categories, descriptions = [], [], []
    for item in range(len(rows)):
        fields = {k: _clean(v) for k, v in rows[item].items() if k != "item"}
        known = {k: v for k, v in fields.items() if v and v.lower() != UNKNOWN}
        short, long = known.get("short desc", ""), known.get("description", "")
        # the short description is usually the long one's first sentence: do not say it twice
        description = long if short and long.startswith(short) else " ".join(p for p in (short, long) if p)
        names.append(known.get("name") or f"unknown app {item}")
        categories.append(known.get("category", UNKNOWN))
        descriptions.append(description)
    return Items(name=names, category=categories, description=descriptions)


# --------------------------------------------------------------------------------------------- negatives


def sample_train_negatives(
    log_codes: np.ndarray,
    heldout_negative_codes: np.ndarray,
    num_items: int,
    rng: np.random.Generator,
    negatives_per_row: int = NEGATIVES_PER_ROW,
) -> np.ndarray:
    """Re-sample the train negatives that the held-out split leaves to be made (see the module docstring).

    Args:
        log_codes: (N, F) the raw log, coded; column 0 user, column 1 item code (0..num_items-1), the rest context.
        heldout_negative_codes: (M, F) the negatives already in valid/test.
        num_items: size of the item code space to draw from.
        rng: the generator; users are processed in ascending code order so a user's draws do not depend on
            which other users are present.
        negatives_per_row: negative slots per raw row (2 in NFM/BARS).

    Returns:
        (K, F) int64 negatives: each keeps a (user, context) of the log, its item is one the user never used;
        a user's negative items (held-out ones included) are all distinct.
        ``K = negatives_per_row * N - M``.

    Raises:
        DataValidationError: a (user, context) group holds more held-out negatives than it has slots, a held-out
            negative's item was used by its user, or a user has too few unused items.
    """
    log_codes = np.asarray(log_codes, dtype=np.int64)
    heldout_negative_codes = np.asarray(heldout_negative_codes, dtype=np.int64).reshape(-1, log_codes.shape[1])
    context_cols = [0, *range(2, log_codes.shape[1])]  # user + context: the group a negative belongs to
    used: dict[int, set[int]] = defaultdict(set)
    for user, item in log_codes[:, :2].tolist():
        used[user].add(item)
    slots, taken = _open_negative_slots(log_codes, heldout_negative_codes, context_cols, used, negatives_per_row)
    per_user: dict[int, list[tuple]] = defaultdict(list)
    for key, count in slots.items():
        per_user[key[0]].extend([key] * count)
    out: list[np.ndarray] = []
    all_items = np.arange(num_items, dtype=np.int64)
    for user in sorted(per_user):
        keys = sorted(per_user[user])  # canonical order, so the draw depends only on the seed
        if not keys:  # the held-out split took all of this user's slots
            continue
        pool = np.setdiff1d(all_items, np.fromiter(used[user] | taken[user], dtype=np.int64), assume_unique=True)
        if len(pool) < len(keys):
            raise DataValidationError(
                f"user {user} needs {len(keys)} distinct negative items but only {len(pool)} are unused"
            )
        block = np.empty((len(keys), log_codes.shape[1]), dtype=np.int64)  # (len(keys), F)
        block[:, context_cols] = np.asarray(keys, dtype=np.int64)
        block[:, 1] = rng.choice(pool, size=len(keys), replace=False)
        out.append(block)
    if not out:
        return np.empty((0, log_codes.shape[1]), dtype=np.int64)
    return np.concatenate(out)


def _open_negative_slots(
    log_codes: np.ndarray, heldout_negative_codes: np.ndarray, context_cols: list[int], used: dict[int, set[int]],
    negatives_per_row: int,
) -> tuple[Counter, dict[int, set[int]]]:
    """The negative slots the held-out negatives leave: ``(user, *context) -> count`` (``negatives_per_row`` per log
    row of the group, less the group's held-out negatives), and per user the held-out negative items already taken.
    Raises :class:`DataValidationError` where the held-out negatives cannot come from this log (see the caller)."""
    slots: Counter = Counter()
    for key in map(tuple, log_codes[:, context_cols].tolist()):
        slots[key] += negatives_per_row
    taken: dict[int, set[int]] = defaultdict(set)
    for row in heldout_negative_codes.tolist():
        key = tuple(row[c] for c in context_cols)
        if slots[key] <= 0:
            raise DataValidationError(
                f"held-out negatives of (user, context) {key} outnumber its {negatives_per_row} slots per log row: "
                "the split does not come from this log"
            )
        slots[key] -= 1
        user, item = row[0], row[1]
        if item in used[user]:
            raise DataValidationError(f"held-out negative item {item} was used by user {user} in the log")
        taken[user].add(item)
    return slots, taken


def _multiset_difference(rows: np.ndarray, remove: np.ndarray, what: str) -> np.ndarray:
    """Row indices of ``rows`` left after removing one matching row per row of ``remove`` (first match first)."""
    positions: dict[tuple, list[int]] = defaultdict(list)
    for n, key in enumerate(map(tuple, rows.tolist())):
        positions[key].append(n)
    drop = np.zeros(len(rows), dtype=bool)
    cursor: Counter = Counter()
    for key in map(tuple, remove.tolist()):
        candidates = positions.get(key, [])
        if cursor[key] >= len(candidates):
            raise DataValidationError(f"{what}: {key} matches no (remaining) row of the log")
        drop[candidates[cursor[key]]] = True
        cursor[key] += 1
    return np.flatnonzero(~drop)


# --------------------------------------------------------------------------------------------- conversion


def _scene_text(field: str, value: str) -> str:
    if field == "city":
        return "unknown city" if value == "0" else f"city {value}"
    return value


def _interactions(codes: np.ndarray, labels: np.ndarray, log: FrappeLog) -> Interactions:
    user_ids = np.asarray([int(v) for v in log.values[0]], dtype=np.int64)
    item_ids = np.asarray([int(v) for v in log.values[1]], dtype=np.int64)
    scene = []
    for f, field in enumerate(SCENE_FEATURES, start=2):
        texts = [_scene_text(field, v) for v in log.values[f]]
        scene.append([texts[c] for c in codes[:, f].tolist()])
    return Interactions(
        user_id=user_ids[codes[:, 0]],
        item_id=item_ids[codes[:, 1]],
        label=labels.astype(np.float32),
        timestamp=np.full(len(codes), -1, dtype=np.int64),
        scene=scene,
    )


def convert_frappe(raw_dir: Path, out_dir: Path, seed: int = 2024, limit_users: int | None = None) -> Dataset:
    """Convert the raw Frappe folder ``raw_dir`` into a dataset folder ``out_dir`` and return the dataset.

    Raises :class:`DataValidationError` (file and line named) on malformed input or a split that does not come
    from this log, ``ValueError`` on a bad ``limit_users``.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if limit_users is not None and limit_users < 1:
        raise ValueError(f"limit_users must be >= 1, got {limit_users}")
    log = read_log(raw_dir / "frappe.csv")
    items = read_items(raw_dir / "meta.csv")

    user_ids = [int(v) for v in log.values[0]]
    if sorted(user_ids) != list(range(len(user_ids))):
        raise DataValidationError(f"{raw_dir / 'frappe.csv'}: user ids are not dense 0..{len(user_ids) - 1}")
    item_ids = [int(v) for v in log.values[1]]
    if max(item_ids) >= len(items):
        raise DataValidationError(
            f"{raw_dir / 'frappe.csv'}: item {max(item_ids)} is not in meta.csv ({len(items)} items)"
        )

    heldout = {split: decode_libfm(raw_dir / name, log.field_sizes) for split, name in SPLIT_FILES.items()}
    positives = np.concatenate([codes[labels == 1] for labels, codes in heldout.values()])
    negatives = np.concatenate([codes[labels == 0] for labels, codes in heldout.values()])
    kept = _multiset_difference(log.codes, positives, "a valid/test positive")  # raises if one does not match

    # Sample in the libFM code space; all items of meta.csv are candidates, via their item code when logged.
    item_code = {item: code for code, item in enumerate(item_ids)}
    unlogged = [i for i in range(len(items)) if i not in item_code]
    values = [list(v) for v in log.values]
    for item in unlogged:  # give apps absent from the log a code too, so they can be drawn as negatives
        item_code[item] = len(values[1])
        values[1].append(str(item))
    log = FrappeLog(codes=log.codes, values=values)
    rng = np.random.default_rng(seed)
    train_negatives = sample_train_negatives(log.codes, negatives, len(values[1]), rng)

    train_codes = np.concatenate([log.codes[kept], train_negatives])
    train_labels = np.concatenate([np.ones(len(kept)), np.zeros(len(train_negatives))]).astype(np.float32)
    order = rng.permutation(len(train_codes))
    splits = {"train": (train_labels[order], train_codes[order])}
    splits.update(heldout)

    num_users = len(user_ids)
    if limit_users is not None:
        user_code_ok = np.asarray([u < limit_users for u in user_ids])
        splits = {name: (lab[user_code_ok[c[:, 0]]], c[user_code_ok[c[:, 0]]]) for name, (lab, c) in splits.items()}
        num_users = min(limit_users, num_users)
        empty = [name for name, (lab, _) in splits.items() if len(lab) == 0]
        if empty:
            raise ValueError(f"limit_users={limit_users} leaves no rows in {empty}; use more users")

    dataset = Dataset(
        info=DatasetInfo(name="frappe", scene_features=SCENE_FEATURES, num_users=num_users, num_items=len(items)),
        items=items,
        splits={name: _interactions(codes, labels, log) for name, (labels, codes) in splits.items()},
    )
    write_dataset(out_dir, dataset)
    return dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw_dir", type=Path, help="folder with frappe.csv, meta.csv and nfm_split/")
    parser.add_argument("out_dir", type=Path, help="where to write the dataset (keep it private: research licence)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the train negative sampler")
    parser.add_argument("--limit-users", type=int, default=None, help="keep users 0..N-1 only (smoke tests)")
    args = parser.parse_args(argv)
    dataset = convert_frappe(args.raw_dir, args.out_dir, seed=args.seed, limit_users=args.limit_users)
    for name, rows in dataset.splits.items():
        print(f"{name}: {len(rows)} rows, {int(rows.label.sum())} positives")


if __name__ == "__main__":
    main()
