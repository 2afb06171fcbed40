"""``FieldVocab``: raw categorical values of each field -> the per-field indices a backbone embeds (NumPy only).

::

    vocab = FieldVocab(["user", "item", "weather"]).fit(train_columns)  # 0 = every unseen value
    sparse = vocab.transform(batch_columns)                              # (N, F) int64
    model = build_backbone(vocab.sizes, dense_dim=0, config=config)      # vocab.sizes: rows per field table
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np


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
