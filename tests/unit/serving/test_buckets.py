"""Choosing a static shape for a call and padding it there (larr.serving.buckets): pure NumPy, no model."""

from __future__ import annotations

import numpy as np
import pytest

from larr.serving.buckets import (
    BatchedCTRShapes,
    Bucket,
    BucketGrid,
    CTRRequestShapes,
    EmbedderShapes,
    bucket_size,
    pad_axis,
    power_of_two_sizes,
)

GRID = BucketGrid(batch=(1, 2, 4, 8), length=(8, 16, 32))


def test_bucket_size_is_the_smallest_that_holds_the_call() -> None:
    assert [bucket_size(n, (1, 2, 4, 8)) for n in (1, 2, 3, 4, 5, 8)] == [1, 2, 4, 4, 8, 8]
    assert bucket_size(9, (1, 2, 4, 8)) is None  # beyond the grid: run as it is
    with pytest.raises(ValueError, match="at least one row"):
        bucket_size(0, (1, 2))


def test_power_of_two_sizes_end_at_the_largest_even_when_it_is_no_power_of_two() -> None:
    assert power_of_two_sizes(64) == (1, 2, 4, 8, 16, 32, 64)
    assert power_of_two_sizes(48, smallest=8) == (8, 16, 32, 48)
    assert power_of_two_sizes(1) == (1,)
    with pytest.raises(ValueError):
        power_of_two_sizes(4, smallest=8)


def test_the_grid_checks_parses_and_lists_its_buckets_largest_first() -> None:
    grid = BucketGrid.parse('{"batch": [1, 4], "length": [16, 32]}')
    assert grid == BucketGrid((1, 4), (16, 32)) and BucketGrid.parse(grid.to_json()) == grid
    assert grid.buckets() == [Bucket(4, 32), Bucket(4, 16), Bucket(1, 32), Bucket(1, 16)]
    assert grid.choose(3, 17) == Bucket(4, 32) and grid.choose(5, 1) is None and grid.choose(1, 33) is None
    for bad in ((4, 1), (1, 1), (0, 2), ()):
        with pytest.raises(ValueError, match="distinct, ascending and >= 1"):
            BucketGrid(batch=bad, length=(8,))
    with pytest.raises(ValueError, match="bucket grid must be JSON"):
        BucketGrid.parse('{"batch": [1]}')


def test_pad_axis_grows_one_axis_and_refuses_to_shrink() -> None:
    value = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(pad_axis(value, 1, 5, fill=-1), [[0, 1, 2, -1, -1], [3, 4, 5, -1, -1]])
    assert pad_axis(value, 0, 2) is value  # it fits: no copy
    with pytest.raises(ValueError, match="> bucket size"):
        pad_axis(value, 1, 2)


def test_embedder_padding_masks_the_new_tokens_and_gives_new_rows_one_real_token() -> None:
    ids = np.array([[5, 6, 7], [4, 0, 0], [9, 8, 0]], np.int64)  # (3, 3), right-padded
    mask = (ids > 0).astype(np.int64)
    mask_before = mask.copy()
    shapes = EmbedderShapes()
    bucket = shapes.bucket([ids, mask], GRID)
    assert bucket == Bucket(4, 8)
    padded_ids, padded_mask = shapes.pad([ids, mask], bucket)
    assert padded_ids.shape == padded_mask.shape == (4, 8)
    np.testing.assert_array_equal(padded_ids[:3, :3], ids)
    np.testing.assert_array_equal(padded_mask[:3], np.pad(mask, ((0, 0), (0, 5))))  # real rows: masked zeros after
    np.testing.assert_array_equal(padded_mask[3], [1, 0, 0, 0, 0, 0, 0, 0])  # a new row: never fully masked
    np.testing.assert_array_equal(mask, mask_before)  # the caller's arrays are untouched
    output = np.arange(4 * 2).reshape(4, 2)  # (B', D)
    np.testing.assert_array_equal(shapes.unpad(output, [ids, mask]), output[:3])
    example = shapes.example(Bucket(2, 16))
    assert [x.shape for x in example] == [(2, 16), (2, 16)] and example[1][:, 0].tolist() == [1, 1]


def test_batched_ctr_padding_adds_zero_requests_and_candidates_of_request_zero() -> None:
    k_prime, d, k = 2, 3, 2
    shapes = BatchedCTRShapes((k_prime, d), k)
    inputs = [np.ones((3, k_prime, d), np.float32), np.ones((3, k), np.int64), np.array([[7], [8], [9]]),
              np.array([1, 2, 3, 4, 5]), np.array([0, 0, 1, 2, 2])]
    bucket = shapes.bucket(inputs, GRID)
    assert bucket == Bucket(4, 8)
    scene_emb, scene_ids, user_id, item_ids, item_request = shapes.pad(inputs, bucket)
    assert (scene_emb.shape, scene_ids.shape, user_id.shape) == ((4, k_prime, d), (4, k), (4, 1))
    assert not scene_emb[3].any() and user_id[3, 0] == 0
    np.testing.assert_array_equal(item_ids, [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(item_request, [0, 0, 1, 2, 2, 0, 0, 0])  # request 0 always exists
    assert shapes.unpad(np.arange(8.0), inputs).tolist() == [0, 1, 2, 3, 4]
    assert [x.shape for x in shapes.example(Bucket(2, 16))] == [(2, k_prime, d), (2, k), (2, 1), (16,), (16,)]
    assert shapes.bucket([np.ones((9, k_prime, d))] + inputs[1:], GRID) is None  # more requests than the grid


def test_one_request_ctr_buckets_only_its_candidates() -> None:
    shapes = CTRRequestShapes((2, 3), 2)
    inputs = [np.ones((2, 3), np.float32), np.ones(2, np.int64), np.array([7]), np.arange(10)]
    assert shapes.bucket(inputs, GRID) == Bucket(1, 16)
    padded = shapes.pad(inputs, Bucket(1, 16))
    assert [x.shape for x in padded] == [(2, 3), (2,), (1,), (16,)]
    assert shapes.buckets(GRID) == [Bucket(1, 32), Bucket(1, 16), Bucket(1, 8)]  # one capture per length, not per batch
    assert shapes.bucket(inputs[:3] + [np.arange(33)], GRID) is None
