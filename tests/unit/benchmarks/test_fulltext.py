"""The full-text baseline: its first step's logic, its configs, and its repository served in-process
(ONNX Runtime through the adapters' runtimes) against PyTorch."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from larr.benchmarks.fulltext_repository import (
    FULLTEXT_CTR_MODEL,
    FULLTEXT_EMBED_MODEL,
    FULLTEXT_ENSEMBLE_NAME,
    build_fulltext_configs,
    write_fulltext_repository,
)
from larr.benchmarks.fulltext_scenes import FullTextScenes
from larr.benchmarks.inprocess import model_config
from larr.contract import (
    CTR,
    EMBEDDER_MODEL,
    ENSEMBLE_NAME,
    FEATURE_CACHE_MODEL,
    ITEM_IDS,
    ITEM_REQUEST,
    PARAM_EMBEDDER_MODEL,
    PARAM_SCENE_FEATURES,
    SCENE_EMB,
    SCENE_IDS,
    SCENE_TEXT,
    USER_ID,
)
from larr.export.model_configs import build_configs
from larr.export.options import ModelFacts
from larr.export.repository import RepositoryError, RepositoryOptions, write_repository
from larr.models.ctr_model import CTRModelSpec, LarrCTR, ServingCTR, index_table
from larr.models.embedder import TextEmbedder, embed_texts
from larr.serving.ctr_batch import score_batch
from larr.serving.ctr_request import CTRLimits, CTRRequest
from larr.serving.errors import RequestError
from larr.serving.feature_cache import SceneVocab
from larr.serving.runtime import load_runtime
from larr.text import format_scene
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer

FEATURES = ("weather", "place")
FACTS = ModelFacts(scene_features=FEATURES, embedding_dim=8, scene_inputs=1, embedder_version="abc", max_length=64,
                   vocab_size=300, scene_vocab_sizes=(3, 2))


def tensors(tensor_list) -> dict[str, tuple[int, list[int]]]:
    return {t.name: (t.data_type, list(t.dims)) for t in tensor_list}


# --------------------------------------------------------------------------------------------- the first step


@pytest.fixture(scope="module")
def scenes(scene_tokenizer) -> FullTextScenes:
    tokenizer = EmbeddingTokenizer(scene_tokenizer.tokenizer, EmbeddingInputConfig(max_length=64))  # a whole scene
    return FullTextScenes(FEATURES, tokenizer, SceneVocab(FEATURES, ({"heavy rain": 1}, {"office": 1, "home": 2})))


def test_one_whole_scene_text_per_valid_request(scenes):
    parsed = [
        scenes.parse(np.array([b"heavy rain", b"office"], dtype=object)),
        scenes.parse(np.array([b"only one"], dtype=object)),  # wrong K
        scenes.parse(np.array(["sunny", "home"], dtype=object)),
    ]
    assert isinstance(parsed[1], RequestError) and "schema has 2" in str(parsed[1])
    texts = scenes.texts(parsed)
    assert texts == [format_scene(FEATURES, ["heavy rain", "office"]), format_scene(FEATURES, ["sunny", "home"])]
    input_ids, attention_mask = scenes.tokenize(texts)
    assert input_ids.shape == attention_mask.shape and input_ids.shape[0] == 2
    assert scenes.token_counts(texts) == attention_mask.sum(axis=1).tolist()

    embeddings = np.arange(2 * 8, dtype=np.float32).reshape(2, 8)
    results = scenes.results(parsed, embeddings)
    (emb0, ids0), error, (emb2, ids2) = results
    assert error is parsed[1]
    assert emb0.shape == (1, 8) and np.array_equal(emb0[0], embeddings[0]) and np.array_equal(emb2[0], embeddings[1])
    assert ids0.tolist() == [1, 1] and ids2.tolist() == [0, 2]


def test_results_check_the_embedder_rows(scenes):
    parsed = [scenes.parse(["heavy rain", "office"])]
    with pytest.raises(RuntimeError, match="1 scene texts"):
        scenes.results(parsed, np.zeros((2, 8), dtype=np.float32))
    failed = [RequestError("the embedder failed")]
    assert scenes.results(failed, None) == failed


# --------------------------------------------------------------------------------------------- configs


def test_configs_round_trip_and_share_the_public_contract():
    options = RepositoryOptions(max_candidates=50, embedder_max_batch=16, feature_cache_instances=3)
    configs = build_fulltext_configs(options, FACTS)
    assert set(configs) == {FULLTEXT_ENSEMBLE_NAME, FULLTEXT_EMBED_MODEL, EMBEDDER_MODEL, FULLTEXT_CTR_MODEL}
    parsed = {name: text_format.Parse(text_format.MessageToString(c), mc.ModelConfig()) for name, c in configs.items()}
    assert parsed == configs

    larr = build_configs(options, dataclasses.replace(FACTS, scene_inputs=len(FEATURES)))[ENSEMBLE_NAME]
    ensemble = parsed[FULLTEXT_ENSEMBLE_NAME]
    assert ensemble.platform == "ensemble"
    assert tensors(ensemble.input) == tensors(larr.input) == {
        SCENE_TEXT: (mc.TYPE_STRING, [-1]), USER_ID: (mc.TYPE_INT64, [1]), ITEM_IDS: (mc.TYPE_INT64, [-1]),
    }
    assert tensors(ensemble.output) == tensors(larr.output) == {CTR: (mc.TYPE_FP32, [-1])}
    assert dict(ensemble.parameters) == dict(larr.parameters)  # the same published schema
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [FULLTEXT_EMBED_MODEL, FULLTEXT_CTR_MODEL]

    embed = parsed[FULLTEXT_EMBED_MODEL]
    # batched like LARR's steps: the same number of requests per execute at every step
    assert ensemble.max_batch_size == larr.max_batch_size == options.request_batch > 0
    assert (embed.backend, embed.max_batch_size) == ("python", options.request_batch)
    assert parsed[FULLTEXT_CTR_MODEL].max_batch_size == options.request_batch
    # the same concurrency at the first step as LARR's feature_cache, or the comparison is not like for like
    cache_instances = [g.count for g in build_configs(options, FACTS)[FEATURE_CACHE_MODEL].instance_group]
    assert [g.count for g in embed.instance_group] == cache_instances == [3]
    assert tensors(embed.output) == {SCENE_EMB: (mc.TYPE_FP32, [1, 8]), SCENE_IDS: (mc.TYPE_INT64, [-1])}
    assert embed.parameters[PARAM_EMBEDDER_MODEL].string_value == EMBEDDER_MODEL
    assert json.loads(embed.parameters[PARAM_SCENE_FEATURES].string_value) == list(FEATURES)
    assert tensors(parsed[FULLTEXT_CTR_MODEL].input)[SCENE_EMB] == (mc.TYPE_FP32, [1, 8])


def test_config_errors():
    with pytest.raises(RepositoryError, match="one scene embedding"):
        build_fulltext_configs(RepositoryOptions(), ModelFacts(FEATURES, 8, 2, "abc", 64, 300, (3, 2)))
    with pytest.raises(RepositoryError, match="python-backend"):
        build_fulltext_configs(RepositoryOptions(target="gpu"), FACTS)


# --------------------------------------------------------------------------------------------- a repository


@pytest.fixture(scope="module")
def fulltext_head(tiny_run, tmp_path_factory) -> Path:
    """A random full-text CTR head (K' = 1) of the tiny run's LARR head's shape."""
    source = tiny_run.ctr_dir("larr")
    spec = CTRModelSpec(**json.loads((source / "ctr.json").read_text()))
    spec.variant, spec.llm_features = "full_text", 1
    out = tmp_path_factory.mktemp("full_text")
    torch.manual_seed(0)
    LarrCTR(spec).eval().save(out, json.loads((source / "vocab.json").read_text()))
    return out


def test_repository_matches_pytorch(tiny_run, fulltext_head, tmp_path):
    out = tmp_path / "fulltext"
    result = write_fulltext_repository(tiny_run.run_dir, out, ctr_dir=fulltext_head, max_length=96, max_candidates=40)
    for name in result.configs:
        parsed = text_format.Parse((out / name / "config.pbtxt").read_text(encoding="utf-8"), mc.ModelConfig())
        assert parsed == result.configs[name]
    for model in (FULLTEXT_EMBED_MODEL, EMBEDDER_MODEL, FULLTEXT_CTR_MODEL):
        assert (out / model / "1" / "model.py").exists()
    assert EmbeddingInputConfig.load(out / FULLTEXT_EMBED_MODEL / "1").max_length == 96

    # The served computation, in-process: the adapters' runtimes on the exported graphs.
    info = json.loads((tiny_run.data_dir / "dataset.json").read_text())
    features = tuple(info["scene_features"])
    scenes = FullTextScenes.from_directory(out / FULLTEXT_EMBED_MODEL / "1", features)
    embedder = load_runtime(out / EMBEDDER_MODEL / "1", model_config(out, EMBEDDER_MODEL))
    ctr = load_runtime(out / FULLTEXT_CTR_MODEL / "1", model_config(out, FULLTEXT_CTR_MODEL), extra_inputs=(ITEM_REQUEST,))
    scene = ["lunch time", "heavy rain", "office", "ramen", "Golden Noodle House"][: len(features)]
    user, items = np.array([3]), np.arange(10)
    parsed = [scenes.parse(scene)]
    (scene_emb, scene_ids), = scenes.results(parsed, embedder.run(list(scenes.tokenize(scenes.texts(parsed))))[0])
    limits = CTRLimits.from_model_config(model_config(out, FULLTEXT_CTR_MODEL))
    (served,) = score_batch(ctr.run_numpy, [CTRRequest(scene_emb, scene_ids, user, items)], limits)

    reference_embedder = TextEmbedder.from_pretrained(tiny_run.embedder_dir)
    per_feature = EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)
    tokenizer = EmbeddingTokenizer(per_feature.tokenizer, EmbeddingInputConfig(96))
    whole = torch.from_numpy(embed_texts(reference_embedder, tokenizer, [format_scene(features, scene)]))  # (1, D)
    model, vocab = LarrCTR.load(fulltext_head)
    user_table = index_table(vocab["values"][0], info["num_users"])
    item_table = index_table(vocab["values"][1], info["num_items"])
    serving = ServingCTR(model, user_table, item_table).eval()
    with torch.no_grad():
        expected = serving(whole, torch.from_numpy(scene_ids), torch.from_numpy(user), torch.from_numpy(items)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_baseline_added_to_an_exported_larr_repository(tiny_run, fulltext_head, tmp_path):
    out = tmp_path / "both"
    write_repository(tiny_run.run_dir, out, RepositoryOptions(target="cpu"))
    embedder_files = sorted(p.name for p in (out / EMBEDDER_MODEL / "1").iterdir())
    onnx = out / EMBEDDER_MODEL / "1" / "model.onnx"
    write_fulltext_repository(tiny_run.run_dir, out, ctr_dir=fulltext_head, embedder_onnx=onnx)
    assert sorted(p.name for p in (out / EMBEDDER_MODEL / "1").iterdir()) == embedder_files  # shared, untouched
    for name in (ENSEMBLE_NAME, FULLTEXT_ENSEMBLE_NAME, FULLTEXT_EMBED_MODEL, FULLTEXT_CTR_MODEL):
        assert (out / name / "config.pbtxt").exists()


def test_missing_full_text_head(tiny_run, tmp_path):
    with pytest.raises(RepositoryError, match="full-text CTR model"):
        write_fulltext_repository(tiny_run.run_dir, tmp_path / "x", ctr_dir=tmp_path / "nothing")
    shutil.rmtree(tmp_path / "x", ignore_errors=True)
