"""Static shapes for the torch runtime: a batch is padded up to a bucket of a small grid, and its outputs cut back.

A CUDA graph replays fixed shapes only, so the served torch models (``--runtime torch``) can be captured once per
shape at load (larr.serving.graphs) only if every call is padded to one of a few shapes::

    grid = BucketGrid(batch=(1, 2, 4, 8), length=(16, 32, 64))
    shapes = EmbedderShapes()
    bucket = shapes.bucket([ids, mask], grid)           # (B, T) = (3, 20) -> Bucket(4, 32); None: beyond the grid
    padded = shapes.pad([ids, mask], bucket)            # (4, 32) each
    out = shapes.unpad(run(padded), [ids, mask])        # (4, D) -> (3, D)

What "batch" and "length" mean is the model's (one shape class each, with the padding that cannot change a real
row's output):

=======================  ============================  ===========================================================
model                    batch / length                padding
=======================  ============================  ===========================================================
embedder                 texts B / tokens T            tokens: masked zeros after each row's real ones (right
                                                       padding, as the tokenizer makes); rows: one real token 0,
                                                       so no row is fully masked (a softmax over no key is NaN)
ctr, batched             requests B / candidates T     requests: zeros; candidates: item 0 of request 0
ctr, one request         - / candidates N              candidates: item 0
=======================  ============================  ===========================================================

Padded rows are computed and dropped: a request's output never depends on another row (the embedder attends within
a row; the ctr scores a candidate from its own request's row). A call beyond the grid's largest bucket is run as
it is (eager), never refused. NumPy only: no torch, no Triton.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from larr.choices import ChoiceEnum
from larr.contract import PARAM_SHAPE_BUCKETS

SMALLEST_LENGTH = 16  # the shortest length bucket of the export's grids: shorter calls are few and cheap
# ctr candidates per run, the largest bucket the export's grid captures (64 requests x 64 candidates); a larger
# batch runs eagerly -- capturing up to 64 x 1,000 would hold buffers for a batch that hardly ever comes
LARGEST_CTR_BUCKET = 4096


class ShapeBucketing(ChoiceEnum):
    """The export's choice of bucket grid for the torch runtime (``larr export --shape-buckets``)."""

    OFF = "off"  # every call eager at its own shape, float32
    POW2 = "pow2"  # power-of-two batch x length buckets up to the model's limits (CUDA: graphs, bf16)

    @classmethod
    def choice_name(cls) -> str:
        return PARAM_SHAPE_BUCKETS


def bucket_size(n: int, sizes: Sequence[int]) -> int | None:
    """The smallest of ``sizes`` (ascending) that holds ``n``, or None when ``n`` exceeds them all."""
    if n < 1:
        raise ValueError(f"a batch holds at least one row, got {n}")
    return next((size for size in sizes if size >= n), None)


def power_of_two_sizes(largest: int, smallest: int = 1) -> tuple[int, ...]:
    """``smallest, 2 smallest, 4 smallest, ...`` up to ``largest``, which is always the last size (it need not be a
    power of two: a model's max batch size is). E.g. (1, 2, 4, 8, 16, 32, 64) for 64, (8, 16, 32, 48) for 48, 8."""
    if not 1 <= smallest <= largest:
        raise ValueError(f"need 1 <= smallest <= largest, got {smallest}, {largest}")
    sizes = []
    size = smallest
    while size < largest:
        sizes.append(size)
        size *= 2
    return (*sizes, largest)


def pow2_grid(max_batch: int, max_length: int) -> BucketGrid:
    """Power-of-two batch sizes up to ``max_batch`` x power-of-two lengths from :data:`SMALLEST_LENGTH` (or less, for
    a shorter ``max_length``) up to ``max_length``."""
    return BucketGrid(power_of_two_sizes(max_batch), power_of_two_sizes(max_length, min(SMALLEST_LENGTH, max_length)))


@dataclass(frozen=True)
class Bucket:
    batch: int
    length: int


@dataclass(frozen=True)
class BucketGrid:
    """The static shapes a model is padded to: every ``batch`` size crossed with every ``length`` size."""

    batch: tuple[int, ...]  # ascending
    length: tuple[int, ...]  # ascending

    def __post_init__(self) -> None:
        for name in ("batch", "length"):
            sizes = tuple(int(size) for size in getattr(self, name))
            if not sizes or sizes[0] < 1 or list(sizes) != sorted(set(sizes)):
                raise ValueError(f"bucket {name} sizes must be distinct, ascending and >= 1, got {list(sizes)}")
            object.__setattr__(self, name, sizes)

    @classmethod
    def parse(cls, raw: str) -> BucketGrid:
        """From the model config's JSON ``{"batch": [1, 2, 4], "length": [16, 32]}``."""
        try:
            value = json.loads(raw)
            return cls(batch=tuple(value["batch"]), length=tuple(value["length"]))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f'bucket grid must be JSON {{"batch": [...], "length": [...]}}, got {raw!r} ({error})') from None

    def to_json(self) -> str:
        return json.dumps({"batch": list(self.batch), "length": list(self.length)})

    def buckets(self) -> list[Bucket]:
        """Every bucket, largest first (captures share one memory pool; the largest first sizes it)."""
        return [Bucket(b, t) for b in reversed(self.batch) for t in reversed(self.length)]

    def choose(self, batch: int, length: int) -> Bucket | None:
        b, t = bucket_size(batch, self.batch), bucket_size(length, self.length)
        return None if b is None or t is None else Bucket(b, t)


def pad_axis(value: np.ndarray, axis: int, size: int, fill: float | int = 0) -> np.ndarray:
    """``value`` grown along ``axis`` to ``size`` with ``fill`` (a new array; ``value`` itself when it fits)."""
    value = np.asarray(value)
    extra = size - value.shape[axis]
    if extra < 0:
        raise ValueError(f"axis {axis} has {value.shape[axis]} > bucket size {size}")
    if extra == 0:
        return value
    widths = [(0, 0)] * value.ndim
    widths[axis] = (0, extra)
    return np.pad(value, widths, constant_values=fill)


class Shapes(Protocol):
    """How one model's inputs map to a bucket, are padded to it, and how its output is cut back."""

    def bucket(self, inputs: Sequence[np.ndarray], grid: BucketGrid) -> Bucket | None: ...

    def buckets(self, grid: BucketGrid) -> list[Bucket]:
        """Every bucket a call can land in, largest first."""

    def pad(self, inputs: Sequence[np.ndarray], bucket: Bucket) -> list[np.ndarray]: ...

    def unpad(self, output, inputs: Sequence[np.ndarray]): ...

    def example(self, bucket: Bucket) -> list[np.ndarray]:
        """Inputs of the bucket's shape (what a capture at load runs on)."""


@dataclass(frozen=True)
class EmbedderShapes:
    """``input_ids, attention_mask`` (B, T) int64 -> EMBEDDING (B, D)."""

    def bucket(self, inputs: Sequence[np.ndarray], grid: BucketGrid) -> Bucket | None:
        rows, width = np.shape(inputs[0])
        return grid.choose(rows, width)

    def buckets(self, grid: BucketGrid) -> list[Bucket]:
        return grid.buckets()

    def pad(self, inputs: Sequence[np.ndarray], bucket: Bucket) -> list[np.ndarray]:
        input_ids, attention_mask = (pad_axis(x, 1, bucket.length) for x in inputs)  # (B, T'): masked zeros
        rows = len(input_ids)
        input_ids = pad_axis(input_ids, 0, bucket.batch)  # (B', T'): token 0 ...
        attention_mask = pad_axis(attention_mask, 0, bucket.batch)
        attention_mask[rows:, 0] = 1  # ... as one real token (pad_axis copied, so the caller's mask is untouched)
        return [input_ids, attention_mask]

    def unpad(self, output, inputs: Sequence[np.ndarray]):
        return output[: len(inputs[0])]  # (B', D) -> (B, D)

    def example(self, bucket: Bucket) -> list[np.ndarray]:
        input_ids = np.zeros((bucket.batch, bucket.length), np.int64)
        return self.pad([input_ids[:1, :1], np.ones((1, 1), np.int64)], bucket)


@dataclass(frozen=True)
class BatchedCTRShapes:
    """``SCENE_EMB (B, K', D), SCENE_IDS (B, K), USER_ID (B, 1), ITEM_IDS (T,), ITEM_REQUEST (T,)`` -> CTR (T,)."""

    scene_shape: tuple[int, int]  # (K', D)
    scene_features: int  # K

    def bucket(self, inputs: Sequence[np.ndarray], grid: BucketGrid) -> Bucket | None:
        return grid.choose(len(inputs[0]), len(inputs[3]))

    def buckets(self, grid: BucketGrid) -> list[Bucket]:
        return grid.buckets()

    def pad(self, inputs: Sequence[np.ndarray], bucket: Bucket) -> list[np.ndarray]:
        scene_emb, scene_ids, user_id, item_ids, item_request = inputs
        # extra requests are zeros; extra candidates are item 0 of request 0, which always exists
        return [pad_axis(x, 0, bucket.batch) for x in (scene_emb, scene_ids, user_id)] + [
            pad_axis(x, 0, bucket.length) for x in (item_ids, item_request)
        ]

    def unpad(self, output, inputs: Sequence[np.ndarray]):
        return output[: len(inputs[3])]  # (T',) -> (T,)

    def example(self, bucket: Bucket) -> list[np.ndarray]:
        one = [np.zeros((1, *self.scene_shape), np.float32), np.zeros((1, self.scene_features), np.int64),
               np.zeros((1, 1), np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64)]
        return self.pad(one, bucket)


@dataclass(frozen=True)
class CTRRequestShapes:
    """One request: ``SCENE_EMB (K', D), SCENE_IDS (K,), USER_ID (1,), ITEM_IDS (N,)`` -> CTR (N,); only N varies."""

    scene_shape: tuple[int, int]  # (K', D)
    scene_features: int  # K

    def bucket(self, inputs: Sequence[np.ndarray], grid: BucketGrid) -> Bucket | None:
        length = bucket_size(len(inputs[3]), grid.length)
        return None if length is None else Bucket(1, length)

    def buckets(self, grid: BucketGrid) -> list[Bucket]:
        return [Bucket(1, t) for t in reversed(grid.length)]  # one request: the batch sizes do not apply

    def pad(self, inputs: Sequence[np.ndarray], bucket: Bucket) -> list[np.ndarray]:
        return [*inputs[:3], pad_axis(inputs[3], 0, bucket.length)]

    def unpad(self, output, inputs: Sequence[np.ndarray]):
        return output[: len(inputs[3])]  # (N',) -> (N,)

    def example(self, bucket: Bucket) -> list[np.ndarray]:
        one = [np.zeros(self.scene_shape, np.float32), np.zeros(self.scene_features, np.int64),
               np.zeros(1, np.int64), np.zeros(1, np.int64)]
        return self.pad(one, bucket)
