"""The real ``larr`` ensemble on a real tritonserver: parity with PyTorch, cache hits, concurrency, bad input.

The repository is exported from the session's tiny trained run (tests/conftest.py) into a temporary
folder with a small cache bound, and served on free loopback ports. Every test runs once per served form:
ONNX Runtime on the CPU (default) and PyTorch on CUDA (``-m gpu``, skipped without a CUDA GPU).
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from larr.clients import LarrClient, ScoreRequest
from larr.contract import (
    ATTENTION_MASK,
    CTR,
    CTR_MODEL,
    EMBEDDER_BACKGROUND_MODEL,
    EMBEDDER_MODEL,
    EMBEDDING,
    ENSEMBLE_NAME,
    FEATURE_CACHE_MODEL,
    INPUT_IDS,
    ITEM_IDS,
    SCENE_EMB,
    SCENE_IDS,
    SCENE_TEXT,
    USER_ID,
)
from larr.data.schema import load_dataset
from larr.export.model_configs import build_configs
from larr.export.options import BACKGROUND_NICE, ModelFacts
from larr.export.repository import RepositoryOptions, write_repository
from larr.models.ctr_model import LarrCTR, ServingCTR, index_table
from larr.models.embedder import TextEmbedder, embed_texts
from larr.models.field_vocab import FieldVocab
from larr.serving.feature_cache import SceneVocab
from larr.serving.server.supervisor import find_stubs
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
def reference(trained_models):
    """The in-process PyTorch model: TextEmbedder per feature -> ServingCTR."""

    def score(scene: list[str], user: int, items: list[int]) -> np.ndarray:
        return trained_models.score(trained_models.embed_scene(scene), trained_models.scene_ids(scene), user, items)

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


def test_a_100k_character_text_scores_as_its_clipped_text(server, dataset, reference, trained_models):
    tokenizer = trained_models.tokenizer
    feature = dataset.info.scene_features[0]
    long_text = "rain " * 20_000  # 100,000 characters
    # "rain " * 200 (1,000 characters, under the character clip) already fills the token budget with the same
    # tokens, so it is the long text as the embedder can see it: score it in-process, independently of the clip
    prefix = "rain " * 200
    assert len(prefix) < tokenizer.max_text_chars < len(long_text)
    assert tokenizer.token_ids([format_scene_feature(feature, prefix)]) == tokenizer.token_ids([format_scene_feature(feature, long_text)])
    items = [1, 2]

    def served(text: str) -> np.ndarray:
        texts = good_texts(dataset)
        texts[0] = text.encode()
        return raw_infer(server, texts, np.array([1], np.int64), np.array(items, np.int64))

    long_score = served(long_text)
    # the server keys and embeds the character-clipped text: the same answer, bit for bit
    np.testing.assert_array_equal(long_score, served(long_text[: tokenizer.max_text_chars]))
    # ... which is the PyTorch model's score of the token-clipped text (ONNX vs PyTorch: the parity tolerance)
    scene = [prefix, *dataset.test.scene_row(0)[1:]]
    np.testing.assert_allclose(long_score, reference(scene, 1, items), atol=1e-4, rtol=0)


def test_unknown_ids_score_as_the_out_of_vocabulary_rows(server, dataset, tiny_run, trained_models):
    """Ids past the trained range are scored with row 0 of the user and item tables and the unknown-item text
    row — computed here with the training forward (FieldVocab, LarrCTR), not the serving index tables."""
    scene = dataset.test.scene_row(0)
    known_item, num_items, num_users = 1, dataset.info.num_items, dataset.info.num_users
    model, raw_vocab = LarrCTR.load(tiny_run.ctr_dir("larr"))
    vocab = FieldVocab.from_dict(raw_vocab)
    scene_emb = torch.from_numpy(trained_models.embed_scene(scene))  # (K, D)

    def expected(user: int, item: int | None) -> float:
        """item None: an unknown item (field row 0, text row 0)."""
        sparse = vocab.transform([np.array([user]), np.array([10**9 if item is None else item]), *[[t] for t in scene]])  # (1, F)
        item_rows = torch.tensor([0 if item is None else item + 1])
        with torch.no_grad():
            return torch.sigmoid(model(torch.from_numpy(sparse), scene_emb[None], item_rows).logits).item()

    oov_row = vocab.transform([np.array([10**9]), np.array([10**9]), *[[t] for t in scene]])[0]
    assert oov_row[0] == 0 and oov_row[1] == 0  # row 0: the unseen user / item
    items = np.array([10**9, num_items, known_item], np.int64)
    for user in (10**9, num_users):
        ctr = raw_infer(server, np.array([t.encode() for t in scene], dtype=object), np.array([user], np.int64), items)
        np.testing.assert_allclose(ctr, [expected(user, None), expected(user, None), expected(user, known_item)], atol=1e-4, rtol=0)


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


# --------------------------------------------------------------------------------------------- direct calls, first-step checks


Send = Callable[[], Any]  # sends one prepared request; returns its answer


def direct_call(server, model: str, inputs: dict[str, np.ndarray], output: str) -> Callable[[], Send]:
    """One request straight to ``model``, past the ensemble and the client's checks (what any gRPC client can
    send), to :func:`run_concurrently`."""

    def prepare() -> Send:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensors = []
        for name, value in inputs.items():
            tensor = grpcclient.InferInput(name, list(value.shape), "FP32" if value.dtype == np.float32 else "INT64")
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)

        def send() -> np.ndarray:
            try:
                return client.infer(model, tensors).as_numpy(output)
            finally:
                client.close()

        return send

    return prepare


def run_concurrently(prepares: list[Callable[[], Send]]) -> list[Any]:
    """Each ``prepare()`` makes its client and request; then all are sent at once (a barrier), each from its own
    thread, so that Triton's dynamic batchers put them into the same executes. Per call, in order: the answer,
    or the exception it raised."""
    barrier = threading.Barrier(len(prepares))

    def run(prepare: Callable[[], Send]) -> Any:
        send = prepare()
        barrier.wait()
        try:
            return send()
        except Exception as error:  # compared by the test
            return error

    with ThreadPoolExecutor(max_workers=len(prepares)) as pool:
        return list(pool.map(run, prepares))


def answered(result: Any) -> np.ndarray:
    """``result`` if it is an answer; the server's error otherwise fails the test with its message."""
    assert isinstance(result, np.ndarray), f"{type(result).__name__}: {result}"
    return result


def assert_invalid_argument(result: Any, message: str) -> None:
    assert isinstance(result, InferenceServerException), result
    assert result.status() == "StatusCode.INVALID_ARGUMENT", (result.status(), result.message())
    assert message in result.message(), result.message()


def ensemble_neighbours(server, dataset, reference, tag: str, count: int):
    """``count`` good ensemble requests with never-seen texts (so their misses reach the embedder), as calls,
    and a check of their outcomes against PyTorch."""
    scenes = [{f: f"{tag} {i} {f}" for f in dataset.info.scene_features} for i in range(count)]

    def call(scene: dict[str, str], user: int) -> Callable[[], Send]:
        def prepare() -> Send:
            client = LarrClient(server.grpc_url)  # reads the schema now, not when the requests go out together

            def send() -> np.ndarray:
                with client:
                    return client.score(scene, user, [user, 3])

            return send

        return prepare

    calls = [call(scene, i) for i, scene in enumerate(scenes)]

    def check(outcomes: list[Any]) -> None:
        for i, (scene, got) in enumerate(zip(scenes, outcomes)):
            np.testing.assert_allclose(answered(got), reference(list(scene.values()), i, [i, 3]), atol=1e-4, rtol=0)

    return calls, check


def test_a_bad_direct_embedder_call_fails_alone(server, dataset, trained_models, reference):
    """embedder runs whatever one execute holds as one batch: bad requests sent straight to it among good ones
    (direct, and the ensemble's cache misses) each get INVALID_ARGUMENT, the others their embeddings."""
    vocab = trained_models.embedder.encoder.get_input_embeddings().num_embeddings  # rows of the token-embedding table
    texts = [[format_scene_feature(f, f"direct text {i} {f}") for f in dataset.info.scene_features] for i in range(8)]
    tokenized = [trained_models.tokenizer(t) for t in texts]  # (K, T) ids and mask each
    out_of_vocab, negative = tokenized[0][0].copy(), tokenized[1][0].copy()
    out_of_vocab[1, 0], negative[0, 2] = vocab, -3
    bad = [
        ({INPUT_IDS: out_of_vocab, ATTENTION_MASK: tokenized[0][1]},
         f"{INPUT_IDS}[1, 0] = {vocab} is outside the vocabulary [0, {vocab})"),
        ({INPUT_IDS: negative, ATTENTION_MASK: tokenized[1][1]}, f"{INPUT_IDS}[0, 2] = -3 is outside the vocabulary"),
        ({INPUT_IDS: tokenized[2][0], ATTENTION_MASK: tokenized[2][1][:, :-1]}, f"{ATTENTION_MASK} has shape"),
    ]
    good = [{INPUT_IDS: ids, ATTENTION_MASK: mask} for ids, mask in tokenized]
    neighbours, check_neighbours = ensemble_neighbours(server, dataset, reference, "embedder neighbour", 8)
    direct = [direct_call(server, EMBEDDER_MODEL, x, EMBEDDING) for x, _ in bad] + [
        direct_call(server, EMBEDDER_MODEL, x, EMBEDDING) for x in good
    ]
    outcomes = run_concurrently(direct + neighbours)
    check_neighbours(outcomes[len(direct):])
    for t, got in zip(texts, outcomes[len(bad):len(direct)]):
        np.testing.assert_allclose(answered(got), embed_texts(trained_models.embedder, trained_models.tokenizer, t), atol=1e-4, rtol=0)
    for (_, message), got in zip(bad, outcomes):
        assert_invalid_argument(got, message)


def test_a_bad_direct_ctr_call_fails_alone(server, dataset, trained_models, reference):
    """ctr likewise: bad requests sent straight to it get INVALID_ARGUMENT; the direct and ensemble requests
    batched with them are scored as PyTorch scores them."""
    sizes = trained_models.ctr.model.spec.field_vocab_sizes[2:]  # scene features' table rows: [user, item, *scene]
    rows = range(6)
    scenes = [dataset.test.scene_row(r) for r in rows]
    good = [
        (trained_models.embed_scene(scene), trained_models.scene_ids(scene), int(dataset.test.user_id[r]), [r, r + 5, 2])
        for r, scene in zip(rows, scenes)
    ]

    def inputs(scene_emb: np.ndarray, scene_ids: np.ndarray, user: int, items: list[int]) -> dict[str, np.ndarray]:
        # with the batch axis of 1 that the batched ctr takes: (1, K, D), (1, K), (1, 1), (1, N)
        return {SCENE_EMB: scene_emb[None].astype(np.float32), SCENE_IDS: scene_ids[None].astype(np.int64),
                USER_ID: np.array([[user]], np.int64), ITEM_IDS: np.array([items], np.int64)}

    scene_emb, scene_ids, user, items = good[0]
    beyond, nan_scene = scene_ids.copy(), scene_emb.copy()
    beyond[0], nan_scene[1, 0] = sizes[0], np.nan
    bad = [
        (inputs(scene_emb, beyond, user, items), f"{SCENE_IDS}[0] = {sizes[0]} is outside scene feature 0's ids [0, {sizes[0]})"),
        (inputs(nan_scene, scene_ids, user, items), f"{SCENE_EMB} holds NaN or infinite values"),
        (inputs(scene_emb, scene_ids, user, [4, -5]), f"{ITEM_IDS}[1] = -5: ids must be >= 0"),
    ]
    neighbours, check_neighbours = ensemble_neighbours(server, dataset, reference, "ctr neighbour", 6)
    direct = [direct_call(server, CTR_MODEL, x, CTR) for x, _ in bad] + [
        direct_call(server, CTR_MODEL, inputs(*g), CTR) for g in good
    ]
    outcomes = run_concurrently(direct + neighbours)
    check_neighbours(outcomes[len(direct):])
    for g, got in zip(good, outcomes[len(bad):len(direct)]):
        np.testing.assert_allclose(answered(got)[0], trained_models.score(*g), atol=1e-4, rtol=0)
    for (_, message), got in zip(bad, outcomes):
        assert_invalid_argument(got, message)


def requests_seen(server, model: str) -> int:
    """Requests ``model`` has answered so far, from Triton's statistics (a python model's error response is
    counted as a success: the model ran and answered)."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    stats = client.get_inference_statistics(model).model_stats[0].inference_stats
    return stats.success.count + stats.fail.count


def wait_for_requests(server, model: str, at_least: int, polls: int = 100) -> int:
    """The count once it reaches ``at_least`` (a step's statistics may land just after the ensemble answers)."""
    seen = requests_seen(server, model)
    for _ in range(polls):
        if seen >= at_least:
            break
        time.sleep(0.05)
        seen = requests_seen(server, model)
    return seen


@pytest.mark.parametrize(
    ("user", "items", "message"),
    [
        ([-2], [1, 2], "USER_ID must be >= 0, got -2"),
        ([1], [4, -1], "ITEM_IDS[1] = -1: ids must be >= 0"),
        ([1], list(range(MAX_CANDIDATES + 1)), f"this server scores at most {MAX_CANDIDATES} per request"),
    ],
)
def test_bad_ids_are_refused_by_the_first_step_before_ctr_runs(server, dataset, user, items, message):
    """The gpu target's ctr step is a TensorRT plan without checks; what keeps bad ids from it is feature_cache,
    the first step of both targets, wired the same way in both. Here, on the cpu target: the request is refused
    with INVALID_ARGUMENT by feature_cache, and ctr never sees it."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    served = client.get_model_config(ENSEMBLE_NAME).config
    served_cache = client.get_model_config(FEATURE_CACHE_MODEL).config
    k = len(dataset.info.scene_features)
    facts = ModelFacts(dataset.info.scene_features, embedding_dim=served_cache.output[0].dims[-1], scene_inputs=k,
                       embedder_version="v", max_length=16, vocab_size=2, scene_vocab_sizes=(1,) * k)
    gpu = build_configs(RepositoryOptions(target="gpu", max_candidates=MAX_CANDIDATES), facts)
    first_step = [step for step in served.ensemble_scheduling.step if step.model_name == FEATURE_CACHE_MODEL]
    assert [s.model_name for s in served.ensemble_scheduling.step] == [FEATURE_CACHE_MODEL, CTR_MODEL]
    assert dict(first_step[0].input_map) == dict(gpu[ENSEMBLE_NAME].ensemble_scheduling.step[0].input_map)
    assert [(t.name, t.data_type, list(t.dims)) for t in served_cache.input] == [
        (t.name, t.data_type, list(t.dims)) for t in gpu[FEATURE_CACHE_MODEL].input
    ]

    ctr_before, cache_before = requests_seen(server, CTR_MODEL), requests_seen(server, FEATURE_CACHE_MODEL)
    with pytest.raises(InferenceServerException) as error:
        raw_infer(server, good_texts(dataset), np.array(user, np.int64), np.array(items, np.int64))
    assert_invalid_argument(error.value, message)
    assert wait_for_requests(server, FEATURE_CACHE_MODEL, cache_before + 1) == cache_before + 1  # it answered the refusal
    ctr = raw_infer(server, good_texts(dataset), np.array([1], np.int64), np.array([1, 2], np.int64))
    assert ctr.shape == (2,)
    # ctr's count moved by the good request alone: the bad one never reached it
    assert wait_for_requests(server, CTR_MODEL, ctr_before + 1) == ctr_before + 1


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
    # the background work ran in embedder_background, whose stub runs at idle priority; the request path's
    # embedder never saw these texts
    stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(as_json=False)
    inferences = {m.name: m.inference_count for m in stats.model_stats}
    assert inferences[EMBEDDER_BACKGROUND_MODEL] == k and inferences[EMBEDDER_MODEL] == 0
    (stub,) = [s for s in find_stubs(server.process.pid) if s.model == EMBEDDER_BACKGROUND_MODEL]
    niceness = int(Path(f"/proc/{stub.pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    assert niceness == min(os.nice(0) + BACKGROUND_NICE, 19)
