"""``--runtime torch --shape-buckets pow2`` on a real tritonserver: the padded-to-bucket embedder and ctr answer as the
in-process PyTorch model does. On the CPU the buckets run eagerly; on a CUDA GPU (``-m gpu``) every bucket is a
CUDA graph captured at load in bf16, so the answer is compared at bf16's tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from larr.clients import LarrClient
from larr.contract import CTR_MODEL, EMBEDDER_MODEL, PARAM_SHAPE_BUCKETS
from larr.export.files import read_config
from larr.export.repository import RepositoryOptions, write_repository

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


def test_bucketed_torch_models_answer_as_the_in_process_model(served, trained_models) -> None:
    server, repository, atol = served
    for model in (EMBEDDER_MODEL, CTR_MODEL):  # the export asked both for buckets
        assert PARAM_SHAPE_BUCKETS in read_config(repository / model / "config.pbtxt").parameters
    scene = {f: f"bucketed fresh text {f}" for f in trained_models.features}  # fresh: the embedder runs on the request path
    with LarrClient(server.grpc_url) as client:
        got = [client.score(scene, USER, ITEMS), client.score(scene, USER, ITEMS)]  # a miss, then a hit
    texts = list(scene.values())
    want = trained_models.score(trained_models.embed_scene(texts), trained_models.scene_ids(texts), USER, ITEMS)
    for scores in got:
        np.testing.assert_allclose(scores, want, atol=atol, rtol=0)
