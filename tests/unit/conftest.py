"""Fixtures the unit tests share.

``pb_utils``: a fresh copy of the python-backend stand-in (tests/fakes/pb_utils.py) per test, installed as
``sys.modules["triton_python_backend_utils"]`` for as long as the test runs, so an adapter loaded by file path
imports it.

``scene_tokenizer`` (session scope): a byte-level BPE trained on a few scene texts of :data:`SCENE_FEATURES`,
``max_length`` 16; ``scene_cache(store=None, ids=None, version="v1")`` builds a :class:`SceneFeatureCache`
over it (``store``: an ``LRUStore(100)`` by default; ``ids``: per feature, ``{text: id}`` of the scene vocab).

``gated_embedder``: the :class:`GatedEmbedder` class, an async embedder whose calls wait for an event.

``cpu_repository`` (session scope): the tiny run (``tiny_run``) exported as ``larr export --target cpu``
writes it (ONNX Runtime on the CPU); tests read it, never write into it.

``adapter(model, **parameters)``: the python-backend adapter ``<model>/1/model.py`` that larr ships (package
data, :func:`larr.layout.packaged_adapters_dir`), loaded by file path over the ``pb_utils`` stand-in and
initialised as Triton initialises it: ``args`` name ``cpu_repository``'s model folder, and
``args["model_config"]`` is its ``config.pbtxt`` as JSON, with ``parameters`` (string values) set over the
exported ones.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from larr.layout import packaged_adapters_dir
from larr.serving.feature_cache import SceneFeatureCache, SceneVocab
from larr.serving.stores.lru import LRUStore
from larr.serving.stores.protocol import SceneStore
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer

FAKE_PB_UTILS = Path(__file__).resolve().parent.parent / "fakes" / "pb_utils.py"
PB_UTILS_MODULE = "triton_python_backend_utils"
SCENE_FEATURES = ("weather", "place")  # the tests that use scene_cache name the same two


def load_module(name: str, path: Path) -> ModuleType:
    """The Python file ``path`` imported as a module named ``name`` (not added to ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pb_utils(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_module(PB_UTILS_MODULE, FAKE_PB_UTILS)
    monkeypatch.setitem(sys.modules, PB_UTILS_MODULE, module)
    return module


@pytest.fixture(scope="session")
def scene_tokenizer() -> EmbeddingTokenizer:
    from larr.training.llm import train_bpe_tokenizer

    hf = train_bpe_tokenizer(["heavy rain at the office", "sunny at home", "snow on campus"] * 20, 300, SCENE_FEATURES)
    return EmbeddingTokenizer(hf.backend_tokenizer, EmbeddingInputConfig(max_length=16))


@pytest.fixture
def scene_cache(scene_tokenizer: EmbeddingTokenizer) -> Callable[..., SceneFeatureCache]:
    def make(
        store: SceneStore | None = None, ids: Sequence[Mapping[str, int]] | None = None, version: str = "v1"
    ) -> SceneFeatureCache:
        vocab = SceneVocab(SCENE_FEATURES, tuple(ids) if ids is not None else ({}, {}))
        return SceneFeatureCache(SCENE_FEATURES, scene_tokenizer, vocab, LRUStore(100) if store is None else store, version)

    return make


class GatedEmbedder:
    """An async embedder, ``await embed(texts) -> (M, 3)``, that records each call and answers it once ``gate`` opens
    (the embedder's delay, as an event, never the wall clock): with :meth:`rows` of the texts, or by raising ``fail``."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.fail = fail

    @staticmethod
    def rows(texts: Sequence[str]) -> np.ndarray:
        """(M, 3): a deterministic row per text, a function of the text alone."""
        return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=np.float32)

    async def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.rows(texts)


@pytest.fixture
def gated_embedder() -> type[GatedEmbedder]:
    return GatedEmbedder


@pytest.fixture(scope="session")
def cpu_repository(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from larr.export.repository import RepositoryOptions, write_repository

    out = tmp_path_factory.mktemp("cpu_repository")
    write_repository(tiny_run.run_dir, out, RepositoryOptions(target="cpu", runtime="onnxruntime", device="cpu"),
                     progress=lambda line: None)
    return out


@pytest.fixture
def adapter(pb_utils: ModuleType, cpu_repository: Path) -> Callable[..., object]:
    from larr.benchmarks.inprocess import model_config  # config.pbtxt as the JSON dict Triton hands the model

    def load(model: str, **parameters: str) -> object:
        config = model_config(cpu_repository, model)
        config["parameters"].update({key: {"string_value": value} for key, value in parameters.items()})
        module = load_module(f"larr_adapter_{model}", packaged_adapters_dir() / model / "1" / "model.py")
        instance = module.TritonPythonModel()
        instance.initialize({
            "model_config": json.dumps(config),
            "model_instance_kind": "CPU",
            "model_instance_name": f"{model}_0_0",
            "model_instance_device_id": "0",
            "model_repository": str(cpu_repository / model),
            "model_version": "1",
            "model_name": model,
        })
        return instance

    return load
