"""The real ``larr`` ensemble on a real tritonserver: parity with PyTorch, cache hits, concurrency, bad input.

The repository is exported from the session's tiny trained run (tests/conftest.py) into a temporary
folder with a small cache bound, and served on free loopback ports. Every test runs once per served form:
ONNX Runtime on the CPU (default) and PyTorch on CUDA (``-m gpu``, skipped without a CUDA GPU).
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from larr.clients import LarrClient, ScoreRequest
from larr.contract import CTR, ENSEMBLE_NAME, ITEM_IDS, SCENE_TEXT, USER_ID
from larr.data.schema import load_dataset
from larr.export.repository import RepositoryOptions, write_repository
from larr.models.ctr_model import LarrCTR, ServingCTR, index_table
from larr.models.embedder import TextEmbedder, embed_texts
from larr.serving.feature_cache import SceneVocab
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer

pytestmark = pytest.mark.integration

CACHE_CAPACITY = 64
MAX_CANDIDATES = 50


# The CUDA form is the GPU path of a Triton without TensorRT (python backend, PyTorch on CUDA, DLPack).
SERVED_FORMS = [
    pytest.param({"runtime": "onnxruntime", "device": "cpu"}, id="onnxruntime-cpu"),
    pytest.param({"runtime": "torch", "device": "cuda"}, id="torch-cuda", marks=pytest.mark.gpu),
]


@pytest.fixture(scope="module", params=SERVED_FORMS)
def repository(request, tiny_run, tmp_path_factory) -> Path:
    form = request.param
    if form["device"] == "cuda" and not torch.cuda.is_available():
        pytest.skip("serving on the GPU needs a CUDA GPU visible to torch; none is")
    out = tmp_path_factory.mktemp(f"larr_repository_{form['runtime']}_{form['device']}")
    options = RepositoryOptions(target="cpu", cache_capacity=CACHE_CAPACITY, max_candidates=MAX_CANDIDATES, **form)
    write_repository(tiny_run.run_dir, out, options)
    return out


@pytest.fixture(scope="module")
def server(triton_server_factory, repository):
    return triton_server_factory(repository)


@pytest.fixture(scope="module")
def dataset(tiny_run):
    return load_dataset(tiny_run.data_dir, splits=("test",))


@pytest.fixture(scope="module")
def reference(tiny_run, repository, dataset):
    """The in-process PyTorch model: TextEmbedder per feature -> ServingCTR."""
    embedder = TextEmbedder.from_pretrained(tiny_run.embedder_dir)
    tokenizer = EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)
    model, vocab = LarrCTR.load(tiny_run.ctr_dir("larr"))
    serving = ServingCTR(model, index_table(vocab["values"][0], dataset.info.num_users),
                         index_table(vocab["values"][1], dataset.info.num_items)).eval()
    scene_vocab = SceneVocab.load(repository / "feature_cache" / "1" / "scene_vocab.json")
    features = dataset.info.scene_features

    def score(scene: list[str], user: int, items: list[int]) -> np.ndarray:
        texts = [format_scene_feature(f, t) for f, t in zip(features, scene)]
        scene_emb = torch.from_numpy(embed_texts(embedder, tokenizer, texts))
        with torch.no_grad():
            return serving(scene_emb, torch.from_numpy(scene_vocab.ids(scene)), torch.tensor([user]), torch.tensor(items)).numpy()

    return score


def scene_dict(dataset, row: int) -> dict[str, str]:
    return dict(zip(dataset.info.scene_features, dataset.test.scene_row(row)))


def cache_metrics_by_instance(server) -> dict[str, dict[str, float]]:
    """{instance: {counter: value}} from the metrics endpoint."""
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    values: dict[str, dict[str, float]] = {}
    for name, labels, value in re.findall(r"^larr_feature_cache_(\w+)\{([^}]*)\} (\S+)$", text, flags=re.M):
        instance = re.search(r'instance="([^"]*)"', labels).group(1)
        values.setdefault(instance, {})[name] = float(value)
    return values


def cache_metrics(server) -> dict[str, float]:
    """Counters summed over the feature_cache instances."""
    totals: dict[str, float] = {}
    for counters in cache_metrics_by_instance(server).values():
        for name, value in counters.items():
            totals[name] = totals.get(name, 0.0) + value
    return totals


def raw_infer(server, texts: np.ndarray, user: np.ndarray, items: np.ndarray):
    """Bypass the client's validation: what a careless or hostile caller can send (with the batch axis of 1
    the batching ensemble takes: SCENE_TEXT [1, K], USER_ID [1, 1], ITEM_IDS [1, N] -> CTR [1, N])."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, value, dtype in ((SCENE_TEXT, texts, "BYTES"), (USER_ID, user, None), (ITEM_IDS, items, None)):
        value = value[None]
        tensor = grpcclient.InferInput(name, list(value.shape), dtype or ("INT64" if value.dtype == np.int64 else "INT32"))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return client.infer(ENSEMBLE_NAME, inputs).as_numpy(CTR)[0]


def test_served_ctr_equals_pytorch(server, dataset, reference):
    with LarrClient(server.grpc_url) as client:
        assert client.schema.features == dataset.info.scene_features
        for row in (0, 1, 2):
            scene = scene_dict(dataset, row)
            items = list(range(0, dataset.info.num_items, 7))[:MAX_CANDIDATES]
            served = client.score(scene, int(dataset.test.user_id[row]), items)
            expected = reference(list(scene.values()), int(dataset.test.user_id[row]), items)
            assert served.shape == (len(items),) and served.dtype == np.float32
            np.testing.assert_allclose(served, expected, atol=1e-4, rtol=0)


def test_repeated_scene_features_become_cache_hits(server, dataset):
    scene = {f: f"cache probe {f}" for f in dataset.info.scene_features}
    k = len(dataset.info.scene_features)
    instances = len(cache_metrics_by_instance(server)) or 1
    repeats = 3 * instances
    with LarrClient(server.grpc_url) as client:
        before = cache_metrics(server)
        for user in range(repeats):
            client.score(scene, user, [1, 2, 3])
        after = cache_metrics(server)
    # each instance keeps its own LRU: at most one miss per feature per instance, every other lookup a hit
    misses = after["misses_total"] - before.get("misses_total", 0)
    hits = after["hits_total"] - before.get("hits_total", 0)
    assert k <= misses <= instances * k
    assert hits == repeats * k - misses
    assert hits >= (repeats - instances) * k


def test_concurrent_clients_get_their_own_answers(server, dataset, reference):
    rows = list(range(12))
    expected = {r: reference(dataset.test.scene_row(r), int(dataset.test.user_id[r]), [r, r + 1, 3]) for r in rows}
    answers: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(chunk: list[int]) -> None:
        try:
            with LarrClient(server.grpc_url) as client:
                for r in chunk:
                    answers[r] = client.score(scene_dict(dataset, r), int(dataset.test.user_id[r]), [r, r + 1, 3])
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(rows[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for r in rows:
        np.testing.assert_allclose(answers[r], expected[r], atol=1e-4, rtol=0)
    # the batched client call too
    with LarrClient(server.grpc_url) as client:
        batched = client.score_many([ScoreRequest(scene_dict(dataset, r), int(dataset.test.user_id[r]), [r, r + 1, 3]) for r in rows])
    for r, answer in zip(rows, batched):
        np.testing.assert_allclose(answer, expected[r], atol=1e-4, rtol=0)


def good_texts(dataset) -> np.ndarray:
    return np.array([t.encode() for t in dataset.test.scene_row(0)], dtype=object)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty_text", "is empty"),
        ("missing_texts", "the scene schema has"),
        ("too_many_texts", "the scene schema has"),
        ("not_utf8", "is not valid UTF-8"),
        ("negative_user", "USER_ID must be >= 0"),
        ("negative_item", "ids must be >= 0"),
        ("zero_candidates", "ITEM_IDS is empty"),
        ("too_many_candidates", f"at most {MAX_CANDIDATES}"),
        ("wrong_dtype", "INT64"),
        ("wrong_shape", "USER_ID"),
    ],
)
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(server, dataset, case, message):
    texts, user, items = good_texts(dataset), np.array([1], np.int64), np.array([1, 2], np.int64)
    if case == "empty_text":
        texts[1] = b""
    elif case == "missing_texts":
        texts = texts[:2]
    elif case == "too_many_texts":
        texts = np.concatenate([texts, texts[:1]])
    elif case == "not_utf8":
        texts[0] = b"\xff\xfe rain"
    elif case == "negative_user":
        user = np.array([-4], np.int64)
    elif case == "negative_item":
        items = np.array([3, -1], np.int64)
    elif case == "zero_candidates":
        items = np.zeros(0, np.int64)
    elif case == "too_many_candidates":
        items = np.arange(MAX_CANDIDATES + 1, dtype=np.int64)
    elif case == "wrong_dtype":
        items = np.array([1, 2], np.int32)
    elif case == "wrong_shape":
        user = np.array([1, 2], np.int64)
    with pytest.raises(InferenceServerException) as error:
        raw_infer(server, texts, user, items)
    assert message in error.value.message()
    # the client's mistake, so INVALID_ARGUMENT (never INTERNAL): a client or balancer knows not to retry it
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT", (case, error.value.status())
    # ... and a good request right after is still answered
    ctr = raw_infer(server, good_texts(dataset), np.array([1], np.int64), np.array([1, 2], np.int64))
    assert ctr.shape == (2,) and np.isfinite(ctr).all()


def test_long_texts_are_truncated_and_unknown_ids_scored_as_cold_start(server, dataset):
    texts = good_texts(dataset)
    texts[0] = ("rain " * 20_000).encode()  # 100,000 characters
    unknown = 10**9
    ctr = raw_infer(server, texts, np.array([unknown], np.int64), np.array([unknown, 1], np.int64))
    assert ctr.shape == (2,) and ((ctr > 0) & (ctr < 1)).all()


def test_cache_never_exceeds_its_bound(server, dataset):
    features = dataset.info.scene_features
    with LarrClient(server.grpc_url) as client:
        requests = [ScoreRequest({f: f"unique {i} {f}" for f in features}, 1, [1]) for i in range(60)]
        client.score_many(requests)
        per_instance = cache_metrics_by_instance(server)
    lru_entries = re.findall(r'^larr_feature_cache_tier_entries\{[^}]*tier="lru"[^}]*\} (\S+)$',
                             urllib.request.urlopen(server.metrics_url, timeout=10).read().decode(), flags=re.M)
    assert lru_entries and all(float(v) <= CACHE_CAPACITY for v in lru_entries)  # the scene table is not bounded by it
    # the byte gauge follows the entries: each holds at least its vector (D float32) and one text byte
    assert all((counters["bytes"] > 0) == (counters["entries"] > 0) for counters in per_instance.values())
    assert sum(c["evictions_total"] for c in per_instance.values()) >= 60 * len(features) - len(per_instance) * CACHE_CAPACITY


# --------------------------------------------------------------------------------------------- fresh_text_policy async


@pytest.fixture(scope="module")
def async_server(triton_server_factory, tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("larr_repository_async")
    options = RepositoryOptions(target="cpu", cache_capacity=CACHE_CAPACITY, max_candidates=MAX_CANDIDATES,
                                fresh_text_policy="async")
    write_repository(tiny_run.run_dir, out, options)
    return triton_server_factory(out), out


def wait_for_counter(server, name: str, at_least: float, polls: int = 600) -> float:
    """The counter once it reaches ``at_least``, polling the metrics endpoint (Triton refreshes it about
    once a second); fails after ``polls`` polls of 0.1 s."""
    value = 0.0
    for _ in range(polls):
        value = cache_metrics(server).get(name, 0.0)
        if value >= at_least:
            return value
        time.sleep(0.1)
    pytest.fail(f"{name} stayed at {value}, expected >= {at_least}")


def test_async_policy_answers_fresh_texts_now_and_embeds_them_in_the_background(async_server, tiny_run, dataset):
    server, repository = async_server
    features = dataset.info.scene_features
    k = len(features)
    scene = {f: f"fresh text {f}" for f in features}
    user, items = 3, [1, 2, 3]
    embedder = TextEmbedder.from_pretrained(tiny_run.embedder_dir)
    tokenizer = EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)
    model, vocab = LarrCTR.load(tiny_run.ctr_dir("larr"))
    serving = ServingCTR(model, index_table(vocab["values"][0], dataset.info.num_users),
                         index_table(vocab["values"][1], dataset.info.num_items)).eval()
    ids = torch.from_numpy(SceneVocab.load(repository / "feature_cache" / "1" / "scene_vocab.json").ids(list(scene.values())))

    def expected(scene_emb: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return serving(scene_emb, ids, torch.tensor([user]), torch.tensor(items)).numpy()

    embedded = torch.from_numpy(embed_texts(embedder, tokenizer, [format_scene_feature(f, t) for f, t in scene.items()]))
    with LarrClient(server.grpc_url) as client:
        first = client.score(scene, user, items)
        # every text was fresh: scored now with the unseen-text row (zeros), no embedder on the request path
        np.testing.assert_allclose(first, expected(torch.zeros_like(embedded)), atol=1e-4, rtol=0)
        assert wait_for_counter(server, "fresh_fallbacks_total", k) == k
        # no further request: the background task outlives the execute that started it and stores the texts
        wait_for_counter(server, "background_embedded_total", k)
        before = cache_metrics(server)
        second = client.score(scene, user, items)
        np.testing.assert_allclose(second, expected(embedded), atol=1e-4, rtol=0)
        # the metrics endpoint refreshes on its own clock: wait for the hits of the second request
        wait_for_counter(server, "hits_total", before.get("hits_total", 0.0) + k)
    after = cache_metrics(server)
    assert after["fresh_fallbacks_total"] == k and after["background_embedded_total"] == k
    assert after.get("background_failed_total", 0.0) == 0.0
