"""Integration fixtures: real tritonserver processes on free loopback ports.

``triton_server_factory`` is the reusable piece: ``triton_server_factory(repo_path)`` starts (once per
session and repository) a server on that repository and stops it at the end of the session. Add a
fixture for another repository by calling it, e.g. ``return triton_server_factory(larr_repository)``.

The toy ``larr`` ensemble here (fixture ``toy``: a :class:`ToyEnsemble`, which writes it and
computes its answers) has the real public contract (larr.contract) but a deterministic python model
behind it::

    CTR[n] = sigmoid(0.01 * USER_ID + 0.001 * ITEM_IDS[n] + 0.0001 * total characters of SCENE_TEXT)

and a per-request error for item ids >= TOY_MAX_ITEM_ID, so client tests can check scores and the
server's error messages exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from larr.contract import CTR, ENSEMBLE_NAME, ITEM_IDS, PARAM_MAX_CANDIDATES, PARAM_SCENE_FEATURES, SCENE_TEXT, USER_ID
from larr.serving.server.process import RunningServer, run_triton_server

TOY_SCENE_FEATURES: tuple[str, ...] = ("weather", "time_slot")
TOY_MAX_CANDIDATES = 64
TOY_MAX_ITEM_ID = 1_000_000
TOY_STEP_MODEL = "toy_ctr"
TOY_METRIC = "toy_ctr_requests_total"

# The toy step reads its tensor names from its config, like the real python models do.
_TOY_MODEL_PY = '''\
"""Toy CTR step of the integration-test ensemble (see tests/integration/conftest.py)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

MAX_ITEM_ID = {max_item_id}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.text_name, self.user_name, self.items_name = (t["name"] for t in config["input"])
        self.output_name = config["output"][0]["name"]
        # The family must outlive its metrics, or increment() fails.
        self.requests_family = pb_utils.MetricFamily(
            name="{metric}", description="requests seen by the toy CTR step", kind=pb_utils.MetricFamily.COUNTER
        )
        self.requests_metric = self.requests_family.Metric(labels={{"model": "{model}"}})

    def execute(self, requests):
        self.requests_metric.increment(len(requests))
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, self.text_name).as_numpy()
            user = pb_utils.get_input_tensor_by_name(request, self.user_name).as_numpy()
            items = pb_utils.get_input_tensor_by_name(request, self.items_name).as_numpy()
            too_big = items[items >= MAX_ITEM_ID]
            if too_big.size:
                error = pb_utils.TritonError(f"unknown item id {{int(too_big[0])}}")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            chars = sum(len(t.decode("utf-8")) for t in texts.ravel())
            logits = 0.01 * float(user[0]) + 0.001 * items.astype(np.float64) + 0.0001 * chars
            ctr = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, ctr)]))
        return responses
'''


def toy_ctr(scene_texts: Sequence[str], user_id: int, item_ids: Sequence[int]) -> list[float]:
    """What the toy ensemble returns, computed here for the assertions."""
    chars = sum(len(text) for text in scene_texts)
    return [1.0 / (1.0 + math.exp(-(0.01 * user_id + 0.001 * item + 0.0001 * chars))) for item in item_ids]


def _io(message: Any, tensors: Sequence[tuple[str, int, Sequence[int]]]) -> None:
    for name, data_type, dims in tensors:
        message.add(name=name, data_type=data_type, dims=list(dims))


def _write_config(model_dir: Path, config: mc.ModelConfig) -> None:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")


def write_toy_larr_repository(
    root: Path,
    scene_features: Sequence[str] = TOY_SCENE_FEATURES,
    max_candidates: int = TOY_MAX_CANDIDATES,
) -> Path:
    """Write the toy ``larr`` ensemble (one python step) under ``root``; returns ``root``."""
    io = [
        (SCENE_TEXT, mc.TYPE_STRING, [-1]),
        (USER_ID, mc.TYPE_INT64, [1]),
        (ITEM_IDS, mc.TYPE_INT64, [-1]),
    ]
    out = [(CTR, mc.TYPE_FP32, [-1])]

    step = mc.ModelConfig(name=TOY_STEP_MODEL, backend="python", max_batch_size=0)
    _io(step.input, io)
    _io(step.output, out)
    step.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    _write_config(root / TOY_STEP_MODEL, step)
    (root / TOY_STEP_MODEL / "1" / "model.py").write_text(
        _TOY_MODEL_PY.format(max_item_id=TOY_MAX_ITEM_ID, metric=TOY_METRIC, model=TOY_STEP_MODEL), encoding="utf-8"
    )

    ensemble = mc.ModelConfig(name=ENSEMBLE_NAME, platform="ensemble", max_batch_size=0)
    _io(ensemble.input, io)
    _io(ensemble.output, out)
    ensemble.ensemble_scheduling.step.add(
        model_name=TOY_STEP_MODEL,
        model_version=-1,
        input_map={name: name for name, _, _ in io},
        output_map={CTR: CTR},
    )
    ensemble.parameters[PARAM_SCENE_FEATURES].string_value = json.dumps(list(scene_features))
    ensemble.parameters[PARAM_MAX_CANDIDATES].string_value = str(max_candidates)
    _write_config(root / ENSEMBLE_NAME, ensemble)
    return root


@dataclass(frozen=True)
class ToyEnsemble:
    """The toy ensemble's constants, writer and expected answers, handed to tests by the ``toy`` fixture."""

    scene_features: tuple[str, ...] = TOY_SCENE_FEATURES
    max_candidates: int = TOY_MAX_CANDIDATES
    max_item_id: int = TOY_MAX_ITEM_ID
    step_model: str = TOY_STEP_MODEL
    metric: str = TOY_METRIC

    def write(self, root: Path) -> Path:
        """Write the repository under ``root`` (created if needed); returns ``root``."""
        return write_toy_larr_repository(root, self.scene_features, self.max_candidates)

    @staticmethod
    def ctr(scene_texts: Sequence[str], user_id: int, item_ids: Sequence[int]) -> list[float]:
        """What the toy ensemble returns."""
        return toy_ctr(scene_texts, user_id, item_ids)


@pytest.fixture(scope="session")
def toy() -> ToyEnsemble:
    return ToyEnsemble()


@pytest.fixture(scope="session")
def triton_server_factory() -> Iterator[Callable[..., RunningServer]]:
    """``start(repo_path, **run_triton_server_options) -> RunningServer``, one server per repository
    for the whole session, all stopped when the session ends."""
    servers: dict[Path, tuple[dict[str, Any], RunningServer]] = {}
    with contextlib.ExitStack() as stack:

        def start(repo_path: Path, **options: Any) -> RunningServer:
            key = Path(repo_path).resolve()
            if key not in servers:
                servers[key] = (options, stack.enter_context(run_triton_server(key, **options)))
            started_with, server = servers[key]
            if started_with != options:
                raise ValueError(f"a server for {key} already runs with options {started_with}, not {options}")
            return server

        yield start


@pytest.fixture(scope="session")
def toy_larr_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_larr_repository(tmp_path_factory.mktemp("toy_larr_repository"))


@pytest.fixture(scope="session")
def toy_larr_server(triton_server_factory: Callable[..., RunningServer], toy_larr_repository: Path) -> RunningServer:
    return triton_server_factory(toy_larr_repository)
