"""The scene table: built offline from a dataset (+ extra texts), read back by TableStore as a SceneStore.

A tiny random TextEmbedder and a BPE tokenizer trained on the dataset's texts stand in for a trained run;
rows are checked against the embedder's own output, computed independently one text at a time.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import LlamaConfig, LlamaModel

from larr.cli import build_parser
from larr.contract import SCENE_TABLE_FILE, SCENE_TABLE_INDEX_FILE
from larr.data.synth import SynthConfig, generate
from larr.export.scene_table import SceneTableError, SceneTableOptions, read_extra_texts, write_scene_table
from larr.models.embedder import TextEmbedder
from larr.serving.stores.factory import make_store, tier_names, tier_stats
from larr.serving.stores.lru import LRUStore
from larr.serving.stores.protocol import SceneStore, scene_key
from larr.serving.stores.redis import RedisStore
from larr.serving.stores.table import SceneTableError as TableLoadError
from larr.serving.stores.table import TableStore, table_key_hash
from larr.serving.stores.tiered import TieredStore
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer
from larr.training.llm import train_bpe_tokenizer

VERSION = "0123456789ab"
ATOL = 1e-5
LONG_TEXT = "a very long scene text " * 500  # far beyond max_text_chars


@pytest.fixture(scope="module")
def dataset():
    config = SynthConfig(seed=7, num_users=20, shops_per_category=2, train_rows=300, valid_rows=60, test_rows=60)
    return generate(config)


@pytest.fixture(scope="module")
def embedder_dir(dataset, tmp_path_factory):
    """A random tiny Llama TextEmbedder saved as `larr train embed` saves one."""
    features = dataset.info.scene_features
    corpus = [format_scene_feature(f, t) for split in dataset.splits.values() for f, col in zip(features, split.scene) for t in col]
    hf = train_bpe_tokenizer(corpus, 400, features)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(hf), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    embedder = TextEmbedder(LlamaModel(config), projection_dim=16).eval()
    directory = tmp_path_factory.mktemp("embedder")
    embedder.save_pretrained(directory, hf, EmbeddingInputConfig(max_length=16))
    return directory


@pytest.fixture(scope="module")
def extra_file(dataset, tmp_path_factory):
    features = dataset.info.scene_features
    path = tmp_path_factory.mktemp("extra") / "scenes.jsonl"
    lines = [
        json.dumps({"feature": features[0], "text": "an extra text from the logs"}),
        "",
        json.dumps({"feature": features[-1], "text": LONG_TEXT}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def table(dataset, embedder_dir, extra_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("table")
    options = SceneTableOptions(batch_size=7, progress=False, measure_peak=False)  # odd batch: several, ragged
    result = write_scene_table(embedder_dir, dataset, out, VERSION, extra_texts=extra_file, options=options)
    return out, result


@pytest.fixture(scope="module")
def tokenizer(embedder_dir):
    return EmbeddingTokenizer.from_directory(embedder_dir)


@torch.no_grad()
def embed_one(embedder_dir, tokenizer, feature: str, text: str) -> np.ndarray:
    """The embedder's own output for one scene text, unbatched and unpadded: (D,)."""
    embedder = TextEmbedder.from_pretrained(embedder_dir, dtype=torch.float32)
    input_ids, attention_mask = tokenizer([format_scene_feature(feature, text)])
    return embedder(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))[0].numpy()


def distinct_texts(dataset) -> set[tuple[int, str]]:
    return {(k, t) for split in dataset.splits.values() for k, column in enumerate(split.scene) for t in column}


def test_every_scene_text_is_a_row_and_the_index_matches_the_tensor(table, dataset, tokenizer):
    out, result = table
    index = json.loads((out / SCENE_TABLE_INDEX_FILE).read_text(encoding="utf-8"))
    keys = {(k, text) for k, text, _ in index["keys"]}
    expected = {(k, t[: tokenizer.max_text_chars]) for k, t in distinct_texts(dataset)}
    assert expected <= keys
    assert len(keys) == len(index["keys"]) == index["rows"] == result.rows  # distinct
    assert index["embedder_version"] == VERSION and index["dtype"] == "float32"
    assert index["features"] == list(dataset.info.scene_features)
    assert all(int(h, 16) == table_key_hash(k, text) for k, text, h in index["keys"])
    rows = load_file(str(out / SCENE_TABLE_FILE))["embeddings"]  # the official reader agrees with ours
    assert rows.shape == (index["rows"], index["dim"]) and rows.dtype == np.float32
    assert result.throughput.texts == result.rows and result.throughput.tokens > result.rows
    assert result.throughput.mfu is None  # no peak measured


def test_rows_equal_the_embedders_own_output(table, dataset, embedder_dir, tokenizer):
    out, _ = table
    store = TableStore.load(out, VERSION)
    features = dataset.info.scene_features
    samples = sorted(distinct_texts(dataset))[:: max(1, len(distinct_texts(dataset)) // 6)]
    for k, text in samples:
        (vector,) = store.get_many([scene_key(VERSION, k, text, tokenizer.max_text_chars)])
        assert vector is not None and vector.dtype == np.float32
        np.testing.assert_allclose(vector, embed_one(embedder_dir, tokenizer, features[k], text), atol=ATOL, rtol=0)


def test_model_flops_are_the_per_text_sum_of_the_kaplan_count(table, embedder_dir, tokenizer):
    """Counted per batch, vectorised inside the timed loop; here text by text from the index and the model's shape:
    a text of n tokens costs n * (2 N + 2 L ((n+1)/2) d_attn) plus one projection MLP (two Linear layers)."""
    out, result = table
    index = json.loads((out / SCENE_TABLE_INDEX_FILE).read_text(encoding="utf-8"))
    encoder_config = json.loads((embedder_dir / "encoder" / "config.json").read_text(encoding="utf-8"))
    hidden, layers = encoder_config["hidden_size"], encoder_config["num_hidden_layers"]
    inter, heads, kv = encoder_config["intermediate_size"], encoder_config["num_attention_heads"], encoder_config["num_key_value_heads"]
    head_dim = hidden // heads
    # Llama without biases: q, o (H x H), k, v (H x kv*hd), gate/up/down (H x I), two RMSNorm weights per layer + final
    non_embedding = layers * (2 * hidden * hidden + 2 * hidden * kv * head_dim + 3 * hidden * inter + 2 * hidden) + hidden
    projection = (hidden * hidden + hidden) + (hidden * 16 + 16)  # projection_dim 16
    features = index["features"]
    expected = 0.0
    for k, text, _ in index["keys"]:
        (ids,) = tokenizer.token_ids([format_scene_feature(features[k], text)])
        n = len(ids)
        expected += n * (2 * non_embedding + 2 * layers * (n + 1) / 2 * heads * head_dim) + 2 * projection
    assert result.throughput.model_flops == pytest.approx(expected, rel=1e-12)
    assert result.throughput.tokens == sum(len(tokenizer.token_ids([format_scene_feature(features[k], t)])[0])
                                           for k, t, _ in index["keys"])


def test_each_batch_is_padded_to_its_own_longest_text(dataset, embedder_dir, tmp_path, monkeypatch):
    """Not to the tokenizer's trained multiple (8 here): on sorted batches that would be most of the padding."""
    assert EmbeddingInputConfig.load(embedder_dir).pad_to_multiple_of > 1
    shapes = []
    forward = TextEmbedder.forward

    def recording(self, input_ids, attention_mask):
        shapes.append((input_ids.shape[1], int(attention_mask.sum(dim=1).max())))  # (width, longest real text)
        return forward(self, input_ids, attention_mask)

    monkeypatch.setattr(TextEmbedder, "forward", recording)
    options = SceneTableOptions(batch_size=16, progress=False, measure_peak=False)
    write_scene_table(embedder_dir, dataset, tmp_path, VERSION, options=options)
    assert len(shapes) > 3 and all(width == longest for width, longest in shapes), shapes


def test_compiled_layers_give_the_rows_of_eager_ones(dataset, embedder_dir, tmp_path):
    """``--compile`` (torch.compile per decoder layer, inductor's CPU kernels here) changes speed, not the rows."""
    rows = {}
    for compiled in (False, True):
        options = SceneTableOptions(batch_size=64, progress=False, measure_peak=False, compile=compiled)
        write_scene_table(embedder_dir, dataset, tmp_path / str(compiled), VERSION, options=options)
        rows[compiled] = load_file(str(tmp_path / str(compiled) / SCENE_TABLE_FILE))["embeddings"]
    np.testing.assert_allclose(rows[True], rows[False], atol=ATOL, rtol=0)


def test_table_store_hits_misses_and_stats(table, dataset, tokenizer):
    out, _ = table
    store = TableStore.load(out, VERSION, scene_features=dataset.info.scene_features,
                            max_text_chars=tokenizer.max_text_chars)
    assert isinstance(store, SceneStore)
    k, text = sorted(distinct_texts(dataset))[0]
    other_feature = (k + 1) % len(dataset.info.scene_features)
    keys = [
        scene_key(VERSION, k, text, tokenizer.max_text_chars),
        scene_key(VERSION, k, "never seen anywhere", tokenizer.max_text_chars),
        scene_key("another-version", k, text, tokenizer.max_text_chars),
        scene_key(VERSION, other_feature, "an extra text from the logs", tokenizer.max_text_chars),  # other feature
    ]
    hit, *misses = store.get_many(keys)
    assert hit is not None and hit.shape == (store.rows.shape[1],)
    assert misses == [None, None, None]
    assert store.writable is False  # a TieredStore skips it on write-through
    store.put_many(keys[1:2], np.ones((1, store.rows.shape[1]), np.float32))  # read-only: ignored
    assert store.get_many(keys[1:2]) == [None]
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 4, len(store))
    assert stats.bytes >= store.rows.nbytes > 0


def test_extra_texts_add_rows_and_long_texts_are_keyed_by_their_clipped_prefix(table, dataset, embedder_dir, tokenizer):
    out, _ = table
    store = TableStore.load(out, VERSION)
    features = dataset.info.scene_features
    (extra,) = store.get_many([scene_key(VERSION, 0, "an extra text from the logs", tokenizer.max_text_chars)])
    assert extra is not None
    last = len(features) - 1
    clipped = LONG_TEXT[: tokenizer.max_text_chars]
    assert len(clipped) < len(LONG_TEXT)
    # the request's full text and its clipped prefix are the same key, and the row is the prefix's embedding
    (from_full,) = store.get_many([scene_key(VERSION, last, LONG_TEXT, tokenizer.max_text_chars)])
    (from_prefix,) = store.get_many([scene_key(VERSION, last, clipped, tokenizer.max_text_chars)])
    assert from_full is not None
    np.testing.assert_array_equal(from_full, from_prefix)
    np.testing.assert_allclose(from_full, embed_one(embedder_dir, tokenizer, features[last], clipped), atol=ATOL, rtol=0)
    index = json.loads((out / SCENE_TABLE_INDEX_FILE).read_text(encoding="utf-8"))
    assert all(len(text) <= tokenizer.max_text_chars for _, text, _ in index["keys"])


def test_version_and_feature_mismatches_are_refused(table, dataset):
    out, _ = table
    with pytest.raises(TableLoadError, match="embedded by embedder 0123456789ab.*served embedder is fffffffffff"):
        TableStore.load(out, "fffffffffff")
    with pytest.raises(TableLoadError, match="features"):
        TableStore.load(out, VERSION, scene_features=tuple(reversed(dataset.info.scene_features)))
    with pytest.raises(TableLoadError, match="missing"):
        TableStore.load(out / "nowhere", VERSION)


def test_colliding_hashes_never_return_a_wrong_row(table):
    out, _ = table
    store = TableStore.load(out, VERSION)
    key = next(iter(store._rows_by_hash))
    row = store._rows_by_hash[key]
    store._rows_by_hash[key] = (row, row)  # a bucket of two: both rows are compared by text, not trusted
    (feature, text) = int(store._features[row]), store._texts[row]
    assert store.get_many([scene_key(VERSION, feature, text, 10**6)])[0] is not None
    store._texts[row] = text + " (a different text with the same hash)"
    assert store.get_many([scene_key(VERSION, feature, text, 10**6)]) == [None]


def test_extra_texts_file_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"feature": "weather", "text": "rain"}\n{"feature": "planet", "text": "mars"}\n', encoding="utf-8")
    with pytest.raises(SceneTableError, match=r"bad.jsonl:2: unknown scene feature 'planet'"):
        read_extra_texts(path, ("weather",))
    path.write_text('{"feature": "weather", "text": "  "}\n', encoding="utf-8")
    with pytest.raises(SceneTableError, match=r":1: empty text"):
        read_extra_texts(path, ("weather",))


def test_cli_parses_embed_scenes(tmp_path):
    args = build_parser().parse_args([
        "embed-scenes", "--checkpoints", str(tmp_path), "--out", str(tmp_path / "t"), "--device", "cpu",
        "--batch-size", "64", "--embedder-version", "abc",
    ])
    assert (args.batch_size, args.embedder_version, args.device) == (64, "abc", "cpu")
    assert args.func(args) == 2  # no trained run there: a clear error, exit code 2


def test_cli_writes_a_table_under_the_version_larr_export_publishes(dataset, embedder_dir, tmp_path, capsys):
    """Without --embedder-version the CLI digests an ONNX export: the same digest a separate export gets."""
    import shutil

    from larr.data.schema import write_dataset
    from larr.export.onnx_export import export_embedder, onnx_digest

    run, data, out = tmp_path / "run", tmp_path / "data", tmp_path / "table"
    shutil.copytree(embedder_dir, run / "embed" / "model")
    write_dataset(data, dataset)
    args = build_parser().parse_args([
        "embed-scenes", "--checkpoints", str(run), "--data", str(data), "--out", str(out), "--no-peak",
    ])
    assert args.func(args) == 0
    assert "texts/s" in capsys.readouterr().out
    published = onnx_digest(export_embedder(embedder_dir, tmp_path / "onnx" / "model.onnx"))
    assert len(TableStore.load(out, published)) > 0  # loads under the served version, i.e. the versions agree


# --------------------------------------------------------------------------------------------- the store factory


def test_local_store_is_the_table_then_an_lru_for_what_it_lacks(table, dataset, tokenizer):
    out, _ = table
    features = list(dataset.info.scene_features)
    params = {"scene_store": "local", "embedder_version": VERSION, "scene_features": json.dumps(features)}
    store = make_store(params, out, tokenizer.max_text_chars)
    assert isinstance(store, TieredStore)
    assert [type(t) for t in store.tiers] == [TableStore, LRUStore]
    known = scene_key(VERSION, 0, dataset.train.scene[0][0], tokenizer.max_text_chars)
    fresh = scene_key(VERSION, 0, "a text no dataset has", tokenizer.max_text_chars)
    table_row = TableStore.load(out, VERSION).get_many([known])[0]
    first = store.get_many([known, fresh])
    np.testing.assert_array_equal(first[0], table_row)  # warm from the table, without any put
    assert first[1] is None
    store.put_many([fresh], np.ones((1, table_row.shape[0]), np.float32))  # written through to the LRU only
    assert store.tiers[1].stats().entries == 1 and store.get_many([fresh])[0] is not None
    stats = store.stats()
    assert tier_names(store) == ("table", "lru")
    assert [s.entries for s in tier_stats(store, stats)] == [len(TableStore.load(out, VERSION)), 1]
    assert stats.entries == sum(s.entries for s in tier_stats(store, stats))


def test_local_store_without_a_table_starts_cold_and_redis_adds_the_shared_tier(tmp_path, table, tokenizer):
    assert isinstance(make_store({"scene_store": "local", "embedder_version": VERSION}, tmp_path), LRUStore)
    out, _ = table
    params = {"scene_store": "redis", "embedder_version": VERSION, "redis_url": "redis://127.0.0.1:1/0"}
    store = make_store(params, out, tokenizer.max_text_chars)
    assert [type(t) for t in store.tiers] == [TableStore, LRUStore, RedisStore]
    assert store.tiers[2].config.url == "redis://127.0.0.1:1/0"


def test_a_table_of_another_embedder_is_refused_at_start(table):
    out, _ = table
    with pytest.raises(TableLoadError, match="embedder"):
        make_store({"scene_store": "local", "embedder_version": "another"}, out)
