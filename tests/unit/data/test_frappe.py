"""Frappe converter: the libFM decoder and negative sampler on a hand-made raw folder, then the real data.

The real-data tests need ``../shared/data/frappe`` (research licence, never in the repo) and skip without it.
The full conversion takes a few seconds, so they run by default.
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from larr.data.frappe import (
    FIELDS,
    SCENE_FEATURES,
    convert_frappe,
    decode_libfm,
    read_log,
    sample_train_negatives,
)
from larr.data.schema import DataValidationError, load_dataset

REAL_DIR = Path(__file__).parents[3].parent / "shared/data/frappe"

LOG_HEADER = ["user", "item", "cnt", *SCENE_FEATURES]
META_HEADER = ["item", "package", "category", "downloads", "developer", "icon", "language", "description", "name",
               "price", "rating", "short desc"]  # fmt: skip
CTX_A = ["morning", "monday", "workday", "home", "free", "sunny", "Spain", "0"]
CTX_B = ["evening", "monday", "workday", "home", "free", "sunny", "Spain", "0"]
CTX_C = ["morning", "sunday", "weekend", "unknown", "paid", "rainy", "unknown", "12"]
CTX_D = ["night", "sunday", "weekend", "unknown", "free", "rainy", "unknown", "12"]
CTX_E = ["noon", "friday", "workday", "work", "free", "cloudy", "Spain", "7"]
# (user, item, context); users and items first appear out of id order, so ranks != ids
FAKE_LOG = [
    (1, 3, CTX_A),
    (1, 1, CTX_B),
    (0, 0, CTX_C),
    (0, 3, CTX_D),
    (2, 2, CTX_E),
    (2, 2, CTX_E),  # a duplicate row: held-out positives are removed as a multiset
    (1, 4, CTX_A),
]
NUM_FAKE_ITEMS = 12  # meta.csv lists 12 apps; 5..11 never appear in the log
# held-out rows: (label, user, item, context)
FAKE_VALID = [(1, 0, 0, CTX_C), (1, 2, 2, CTX_E), (-1, 1, 0, CTX_A)]
FAKE_TEST = [(1, 1, 4, CTX_A), (-1, 0, 4, CTX_C)]


def _rows(log):
    return [[str(u), str(i), *ctx] for u, i, ctx in log]


def _encode(log, label: int, user: int, item: int, ctx: list[str]) -> str:
    """libFM line per SOURCE.md: index = field offset + rank of the value's first appearance in the log."""
    rows = _rows(log)
    ranks = [list(dict.fromkeys(r[f] for r in rows)) for f in range(len(FIELDS))]
    offsets = [0, *itertools.accumulate(len(r) for r in ranks)]
    values = [str(user), str(item), *ctx]
    return " ".join([str(label)] + [f"{offsets[f] + ranks[f].index(v)}:1" for f, v in enumerate(values)])


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")


@pytest.fixture
def fake_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    (raw / "nfm_split").mkdir(parents=True)
    _write_tsv(raw / "frappe.csv", LOG_HEADER, [[str(u), str(i), "1", *ctx] for u, i, ctx in FAKE_LOG])
    meta = []
    for item in range(NUM_FAKE_ITEMS):
        if item == 6:  # an app without metadata
            meta.append([str(item)] + ["unknown"] * (len(META_HEADER) - 1))
        else:
            meta.append([str(item), f"com.app{item}", "Tools", "1,000+", "dev", "icon", "en",
                         f"App {item} does things.   Many \u00a0 things.", f"App {item}", "Free", "4.0",
                         f"App {item} does things."])  # fmt: skip
    _write_tsv(raw / "meta.csv", META_HEADER, meta)
    for name, rows in (("validation", FAKE_VALID), ("test", FAKE_TEST)):
        lines = [_encode(FAKE_LOG, *row) for row in rows]
        (raw / "nfm_split" / f"frappe.{name}.libfm").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return raw


# --------------------------------------------------------------------------------------------- fake data


def test_decode_libfm_hand_computed_line(fake_raw: Path) -> None:
    log = read_log(fake_raw / "frappe.csv")
    # field sizes: users {1,0,2}, items {3,1,0,2,4}, daytime 4, weekday 3, isweekend 2, homework 3, cost 2,
    # weather 3, country 2, city {0,12,7}
    assert log.field_sizes == [3, 5, 4, 3, 2, 3, 2, 3, 2, 3]
    # user 0 = rank 1; item 0 = rank 2 at offset 3; night = rank 2 at offset 8; sunday 1 @12; weekend 1 @15;
    # unknown 1 @17; free 0 @20; rainy 1 @22; unknown 1 @25; city 12 = rank 1 @27
    path = fake_raw / "hand.libfm"
    path.write_text("-1 1:1 5:1 10:1 13:1 16:1 18:1 20:1 23:1 26:1 28:1\n", encoding="utf-8")
    labels, codes = decode_libfm(path, log.field_sizes)
    assert labels.tolist() == [0.0]
    decoded = [log.values[f][c] for f, c in enumerate(codes[0])]
    assert decoded == ["0", "0", "night", "sunday", "weekend", "unknown", "free", "rainy", "unknown", "12"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("2 0:1 3:1 8:1 12:1 15:1 17:1 20:1 22:1 25:1 27:1", "label"),
        ("1 0:1 3:1 8:1 12:1 15:1 17:1 20:1 22:1 25:1", "9 features, expected 10"),
        ("1 0:1 3:1 8:1 12:1 15:1 17:1 20:1 22:1 25:1 30:1", "outside field 'city'"),
        ("1 3:1 3:1 8:1 12:1 15:1 17:1 20:1 22:1 25:1 27:1", "outside field 'user'"),
        ("1 0:1 3:0.5 8:1 12:1 15:1 17:1 20:1 22:1 25:1 27:1", "one-hot"),
        ("1 0:1 x:1 8:1 12:1 15:1 17:1 20:1 22:1 25:1 27:1", "not 'index:value'"),
    ],
)
def test_decode_libfm_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.libfm"
    good = "1 0:1 3:1 8:1 12:1 15:1 17:1 20:1 22:1 25:1 27:1"
    path.write_text(f"{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=rf"bad\.libfm: line 2: .*{message}"):
        decode_libfm(path, [3, 5, 4, 3, 2, 3, 2, 3, 2, 3])


def test_read_log_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "frappe.csv"
    _write_tsv(path, LOG_HEADER, [["0", "1", "1", *CTX_A], ["0", "1", "1", *CTX_A[:-1]]])
    with pytest.raises(DataValidationError, match=r"frappe\.csv: line 3: 10 fields, the header has 11"):
        read_log(path)
    _write_tsv(path, LOG_HEADER, [["0", "x", "1", *CTX_A]])
    with pytest.raises(DataValidationError, match=r"frappe\.csv: line 2: column 'item': 'x' is not an integer"):
        read_log(path)
    _write_tsv(path, LOG_HEADER[:-1], [["0", "1", "1", *CTX_A[:-1]]])
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['city'\]"):
        read_log(path)


def _negative_fixture():
    rng = np.random.default_rng(0)
    log = np.array([[u, i, c] for u, i, c in [(0, 0, 0), (0, 1, 0), (0, 2, 1), (1, 0, 0), (1, 3, 2), (2, 4, 0)]])
    heldout = np.array([[0, 5, 0], [1, 6, 2]])  # (user, item, context), items the users never used
    return log, heldout, rng


def test_sample_train_negatives_protocol() -> None:
    log, heldout, rng = _negative_fixture()
    negatives = sample_train_negatives(log, heldout, num_items=30, rng=rng)
    assert len(negatives) == 2 * len(log) - len(heldout)
    used = defaultdict(set)
    for u, i, _ in log.tolist():
        used[u].add(i)
    for u, i, _ in negatives.tolist():
        assert i not in used[u]
    # every (user, context) group ends with exactly 2 negatives per log row, held-out ones included
    slots = Counter((u, c) for u, _, c in log.tolist())
    got = Counter((u, c) for u, _, c in np.concatenate([negatives, heldout]).tolist())
    assert got == Counter({k: 2 * v for k, v in slots.items()})
    # a user's negative items are all distinct, held-out ones included
    per_user = defaultdict(list)
    for u, i, _ in np.concatenate([negatives, heldout]).tolist():
        per_user[u].append(i)
    assert all(len(set(items)) == len(items) for items in per_user.values())


def test_sample_train_negatives_is_seeded() -> None:
    log, heldout, _ = _negative_fixture()
    a = sample_train_negatives(log, heldout, 30, np.random.default_rng(7))
    b = sample_train_negatives(log, heldout, 30, np.random.default_rng(7))
    c = sample_train_negatives(log, heldout, 30, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_train_negatives_rejects_impossible_splits() -> None:
    log, _, rng = _negative_fixture()
    with pytest.raises(DataValidationError, match="outnumber"):  # user 2 / context 0 has 1 row = 2 slots
        sample_train_negatives(log, np.array([[2, 5, 0], [2, 6, 0], [2, 7, 0]]), 30, rng)
    with pytest.raises(DataValidationError, match="was used by user"):
        sample_train_negatives(log, np.array([[0, 1, 0]]), 30, rng)
    with pytest.raises(DataValidationError, match="distinct negative items"):
        sample_train_negatives(log, np.empty((0, 3), dtype=np.int64), 6, rng)


def test_convert_fake_raw_folder(fake_raw: Path, tmp_path: Path) -> None:
    dataset = convert_frappe(fake_raw, tmp_path / "out", seed=1)
    loaded = load_dataset(tmp_path / "out")
    assert loaded.info.name == "frappe" and loaded.info.scene_features == SCENE_FEATURES
    assert (loaded.info.num_users, loaded.info.num_items) == (3, NUM_FAKE_ITEMS)

    def keyed(split):
        return Counter(
            (int(u), int(i), int(y), tuple(split.scene_row(n)))
            for n, (u, i, y) in enumerate(zip(split.user_id, split.item_id, split.label))
        )

    def scene(ctx):
        return tuple([*ctx[:-1], "unknown city" if ctx[-1] == "0" else f"city {ctx[-1]}"])

    assert keyed(loaded.valid) == Counter((u, i, int(y == 1), scene(c)) for y, u, i, c in FAKE_VALID)
    assert keyed(loaded.test) == Counter((u, i, int(y == 1), scene(c)) for y, u, i, c in FAKE_TEST)
    train_pos = Counter({k: v for k, v in keyed(loaded.train).items() if k[2] == 1})
    held_pos = [(u, i, c) for y, u, i, c in FAKE_VALID + FAKE_TEST if y == 1]
    expected_pos = Counter((u, i, 1, scene(c)) for u, i, c in FAKE_LOG) - Counter(
        (u, i, 1, scene(c)) for u, i, c in held_pos
    )
    assert train_pos == expected_pos
    assert len(loaded.train) == 4 + (2 * len(FAKE_LOG) - 2)
    assert len(dataset.train) == len(loaded.train)

    used = defaultdict(set)
    for u, i, _ in FAKE_LOG:
        used[u].add(i)
    train = loaded.train
    negatives = [(int(u), int(i)) for u, i, y in zip(train.user_id, train.item_id, train.label) if y == 0]
    assert all(i not in used[u] for u, i in negatives)
    assert any(i >= 5 for _, i in negatives), "apps absent from the log are candidate negatives too"

    assert loaded.items.name[6] == "unknown app 6" and loaded.items.description[6] == ""
    assert loaded.items.name[2] == "App 2"
    # the short description is the long one's start, so it is not repeated; whitespace is collapsed
    assert loaded.items.description[2] == "App 2 does things. Many things."
    assert set(loaded.train.timestamp.tolist()) == {-1}


def test_convert_fake_limit_users_is_a_subset(fake_raw: Path, tmp_path: Path) -> None:
    full = convert_frappe(fake_raw, tmp_path / "full", seed=3)
    small = convert_frappe(fake_raw, tmp_path / "small", seed=3, limit_users=2)
    assert small.info.num_users == 2
    for name in ("train", "valid", "test"):
        keep = np.flatnonzero(full.splits[name].user_id < 2)
        assert np.array_equal(small.splits[name].item_id, full.splits[name].item_id[keep])
        assert np.array_equal(small.splits[name].label, full.splits[name].label[keep])
    with pytest.raises(ValueError, match="limit_users"):
        convert_frappe(fake_raw, tmp_path / "bad", limit_users=0)


def test_convert_rejects_a_split_from_another_log(fake_raw: Path, tmp_path: Path) -> None:
    # a positive that is not a log row
    (fake_raw / "nfm_split" / "frappe.test.libfm").write_text(_encode(FAKE_LOG, 1, 2, 3, CTX_E) + "\n")
    with pytest.raises(DataValidationError, match="matches no"):
        convert_frappe(fake_raw, tmp_path / "out")


# --------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_dir() -> Path:
    if not (REAL_DIR / "frappe.csv").exists():
        pytest.skip(f"Frappe data not found at {REAL_DIR} (research licence: it lives outside the repo)")
    return REAL_DIR


@pytest.fixture(scope="module")
def real_converted(real_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("frappe")
    convert_frappe(real_dir, out, seed=2024)
    return load_dataset(out)


@pytest.fixture(scope="module")
def raw_rows(real_dir: Path) -> list[tuple]:
    """(user, item, 8 scene texts as the converter writes them), straight from frappe.csv."""
    with (real_dir / "frappe.csv").open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        rows = []
        for r in reader:
            scene = [r[f] for f in SCENE_FEATURES[:-1]] + ["unknown city" if r["city"] == "0" else f"city {r['city']}"]
            rows.append((int(r["user"]), int(r["item"]), tuple(scene)))
    return rows


def _rows_of(split, label: int | None = None) -> list[tuple]:
    return [
        (int(split.user_id[n]), int(split.item_id[n]), tuple(split.scene_row(n)))
        for n in range(len(split))
        if label is None or split.label[n] == label
    ]


def test_real_counts_match_bars(real_converted) -> None:
    counts = {name: (len(s), int(s.label.sum())) for name, s in real_converted.splits.items()}
    assert counts == {"train": (202_027, 67_604), "valid": (57_722, 19_063), "test": (28_860, 9_536)}
    assert real_converted.info.num_users == 957 and real_converted.info.num_items == 4_082
    assert sum(name.startswith("unknown app ") for name in real_converted.items.name) == 550


def test_real_positives_partition_the_log(real_converted, raw_rows) -> None:
    log = Counter(raw_rows)
    heldout = Counter(_rows_of(real_converted.valid, 1)) + Counter(_rows_of(real_converted.test, 1))
    assert not heldout - log, "every valid/test positive is a row of frappe.csv"
    assert Counter(_rows_of(real_converted.train, 1)) + heldout == log


def test_real_negatives_follow_the_protocol(real_converted, raw_rows) -> None:
    used = defaultdict(set)
    for user, item, _ in raw_rows:
        used[user].add(item)
    negatives = [r for s in real_converted.splits.values() for r in _rows_of(s, 0)]
    assert all(item not in used[user] for user, item, _ in negatives)
    # two negatives per log row, in the row's (user, context) group; a user's negative items never repeat
    slots = Counter((u, ctx) for u, _, ctx in raw_rows)
    assert Counter((u, ctx) for u, _, ctx in negatives) == Counter({k: 2 * v for k, v in slots.items()})
    assert len(set((u, i) for u, i, _ in negatives)) == len(negatives)


def test_real_conversion_is_seeded(real_dir: Path, real_converted, tmp_path: Path) -> None:
    # same seed → exactly the full conversion's rows of users 0..29, in the same order (the subset is filtered
    # from the same draws); seed sensitivity is covered by test_sample_train_negatives_is_seeded
    small = convert_frappe(real_dir, tmp_path / "small", seed=2024, limit_users=30)
    for name, split in small.splits.items():
        full = real_converted.splits[name]
        keep = np.flatnonzero(full.user_id < 30)
        assert len(split) == len(keep) > 0
        assert np.array_equal(split.item_id, full.item_id[keep])
        assert np.array_equal(split.label, full.label[keep])
        assert split.scene_row(len(split) - 1) == full.scene_row(int(keep[-1]))
