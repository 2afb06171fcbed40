"""The FastAPI baseline serves the same repository, store and runtime as Triton: its answers equal the in-process
pipeline's (itself checked against the ensemble's steps), and a bad request is a 422 naming the problem."""

from __future__ import annotations

import httpx
import numpy as np

from larr.benchmarks.fastapi_service import run_fastapi_service
from larr.benchmarks.inprocess import InProcessPipeline
from larr.benchmarks.workload import RequestStream, ScenePools, WorkloadSpec
from larr.data.schema import load_dataset


def test_fastapi_answers_like_the_in_process_pipeline(cpu_repository, tiny_run):
    pools = ScenePools.from_dataset(load_dataset(tiny_run.data_dir, splits=("train",)))
    requests = RequestStream(pools, WorkloadSpec(unseen_share=0.5, candidates=5, seed=11)).take(6)
    reference = InProcessPipeline(cpu_repository)
    with run_fastapi_service(cpu_repository) as url:
        for request in requests:
            answer = httpx.post(url + "/score", json=request.to_json(), timeout=30.0)
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose(answer.json()["ctr"], reference.score(request), rtol=0, atol=1e-5)
        bad = requests[0].to_json() | {"scene_text": requests[0].to_json()["scene_text"][:-1]}
        answer = httpx.post(url + "/score", json=bad, timeout=30.0)
        assert answer.status_code == 422 and "SCENE_TEXT" in answer.json()["detail"]
