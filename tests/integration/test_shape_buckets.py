"""``--runtime torch --shape-buckets pow2`` on a real tritonserver: the padded-to-bucket embedder and ctr answer as the
in-process PyTorch model does. On the CPU the buckets run eagerly; on a CUDA GPU (``-m gpu``) every bucket is a
CUDA graph captured at load in bf16, so the answer is compared at bf16's tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from larr.clients import LarrClient
from larr.contract import CTR_MODEL, EMBEDDER_MODEL, PARAM_SHAPE_BUCKETS
from larr.data.schema import load_dataset
from larr.export.files import read_config
from larr.export.repository import RepositoryOptions, write_repository
from larr.models.ctr_model import LarrCTR, ServingCTR, index_table
from larr.models.embedder import TextEmbedder, embed_texts
from larr.serving.feature_cache import SceneVocab
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer

pytestmark = pytest.mark.integration

USER, ITEMS = 3, [1, 2, 3, 4, 5]
FORMS = [
    pytest.param(("cpu", 1e-4), id="cpu-eager-buckets"),
    pytest.param(("cuda", 1e-2), id="cuda-graphs-bf16", marks=pytest.mark.gpu),  # bf16 CTR vs the fp32 model
]


@pytest.fixture(scope="module", params=FORMS)
def served(request, tiny_run, tmp_path_factory, triton_server_factory):
    device, atol = request.param
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a CUDA GPU visible to torch; none is")
    out = tmp_path_factory.mktemp(f"larr_repository_buckets_{device}")
    write_repository(tiny_run.run_dir, out, RepositoryOptions(target="cpu", runtime="torch", device=device,
                                                              shape_buckets="pow2", max_candidates=50))
    return triton_server_factory(out), out, atol


def reference(tiny_run, repository: Path, scene: dict[str, str]) -> np.ndarray:
    dataset = load_dataset(tiny_run.data_dir, splits=("test",))
    embedder = TextEmbedder.from_pretrained(tiny_run.embedder_dir)
    tokenizer = EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)
    model, vocab = LarrCTR.load(tiny_run.ctr_dir("larr"))
    serving = ServingCTR(model, index_table(vocab["values"][0], dataset.info.num_users),
                         index_table(vocab["values"][1], dataset.info.num_items)).eval()
    rows = torch.from_numpy(embed_texts(embedder, tokenizer, [format_scene_feature(f, t) for f, t in scene.items()]))
    ids = torch.from_numpy(SceneVocab.load(repository / "feature_cache" / "1" / "scene_vocab.json").ids(list(scene.values())))
    with torch.no_grad():
        return serving(rows, ids, torch.tensor([USER]), torch.tensor(ITEMS)).numpy()


def test_bucketed_torch_models_answer_as_the_in_process_model(served, tiny_run) -> None:
    server, repository, atol = served
    for model in (EMBEDDER_MODEL, CTR_MODEL):  # the export asked both for buckets
        assert PARAM_SHAPE_BUCKETS in read_config(repository / model / "config.pbtxt").parameters
    features = load_dataset(tiny_run.data_dir, splits=("test",)).info.scene_features
    scene = {f: f"bucketed fresh text {f}" for f in features}  # fresh: the embedder runs on the request path
    with LarrClient(server.grpc_url) as client:
        got = [client.score(scene, USER, ITEMS), client.score(scene, USER, ITEMS)]  # a miss, then a hit
    want = reference(tiny_run, repository, scene)
    for scores in got:
        np.testing.assert_allclose(scores, want, atol=atol, rtol=0)
