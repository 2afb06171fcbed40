"""Fixtures shared by every test folder.

``tiny_run`` (session scope) trains a tiny run once per session, in-process, at the smallest sizes
that exercise all three stages (~30 s on 2 cores)::

    synthetic data at scale 0.1 -> pretrain 20 steps -> embed 5 steps -> ctr 1 epoch (larr, id_only)

Tests read it, never write into it. Set ``LARR_TEST_TINY_RUN=/path/to/run`` to reuse a run folder
made by ``larr train`` instead (its ``config.yaml`` names the dataset), e.g. while iterating on a test.

``redis_server_factory`` (session scope): ``start() -> RedisServer``, a real ``redis-server`` on a free
loopback port without persistence, which a test may stop, pause (SIGSTOP) and restart on the same port;
all are stopped when the session ends. Tests that use it are skipped, with the reason, where the
``redis-server`` binary or the ``redis`` client is missing (``make setup`` installs both).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from larr.data.schema import Dataset, load_dataset
from larr.models.ctr_model import LarrCTR, ServingCTR, index_table
from larr.models.embedder import TextEmbedder, embed_texts
from larr.serving.server.ports import free_port
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer

TINY_RUN_ENV = "LARR_TEST_TINY_RUN"
TINY_VARIANTS = ("larr", "id_only")


@dataclass(frozen=True)
class TinyRun:
    """A trained run: ``run_dir`` as written by ``larr train all --out run_dir``, on ``data_dir``."""

    data_dir: Path
    run_dir: Path

    @property
    def embedder_dir(self) -> Path:
        return self.run_dir / "embed" / "model"

    def ctr_dir(self, variant: str = "larr") -> Path:
        return self.run_dir / "ctr" / variant


def train_tiny_run(data_dir: Path, run_dir: Path) -> TinyRun:
    """Generate the data and run the three stages at the tiny sizes (module docstring)."""
    from larr.data.schema import write_dataset
    from larr.data.synth import SynthConfig, generate
    from larr.training.cli import pipeline, run_stage
    from larr.training.config import load_config

    synth = SynthConfig()
    scale = 0.1
    synth.train_rows, synth.valid_rows, synth.test_rows = (
        int(synth.train_rows * scale), int(synth.valid_rows * scale), int(synth.test_rows * scale),
    )
    write_dataset(data_dir, generate(synth))
    config = load_config("tiny", {
        "data": str(data_dir),
        "threads": 1,
        "pretrain.max_steps": 20,
        "embed.max_steps": 5,
        "ctr.max_epochs": 1,
        "ctr.variants": list(TINY_VARIANTS),
    })
    for stage in pipeline(config):  # what `larr train all` runs: no distillation, which stage 3 does not read here
        run_stage(stage, config, run_dir, resume=False)
    return TinyRun(data_dir, run_dir)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    reuse = os.environ.get(TINY_RUN_ENV)
    if reuse:
        run_dir = Path(reuse).resolve()
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["data"]
        return TinyRun(Path(data).resolve(), run_dir)
    root = tmp_path_factory.mktemp("tiny_run")
    return train_tiny_run(root / "data", root / "run")


@dataclass(frozen=True)
class TrainedModels:
    """The stage-2 ``TextEmbedder`` with its tokenizer and the ``larr`` CTR model as ``ServingCTR`` with the
    dataset's id ranges: the modules ``larr export`` starts from."""

    embedder: TextEmbedder
    tokenizer: EmbeddingTokenizer
    ctr: ServingCTR
    scene_values: tuple[list, ...]  # (K,): per scene feature, the CTR model's field values (index i+1 = values[i])
    dataset: Dataset  # the test split

    @property
    def features(self) -> tuple[str, ...]:
        return self.dataset.info.scene_features

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(M, D): each text as given (already formatted with its feature tag)."""
        return embed_texts(self.embedder, self.tokenizer, list(texts))

    def embed_scene(self, scene: Sequence[str]) -> np.ndarray:
        """(K, D): each scene feature's text embedded on its own, as the feature cache embeds it."""
        return self.embed([format_scene_feature(f, t) for f, t in zip(self.features, scene)])

    def scene_ids(self, scene: Sequence[str]) -> np.ndarray:
        """(K,) the CTR model's field index of each scene text, 0 for a text it never saw."""
        return np.array([values.index(t) + 1 if t in values else 0 for values, t in zip(self.scene_values, scene)],
                        dtype=np.int64)

    def score(self, scene_emb: np.ndarray, scene_ids: np.ndarray, user: int, items: Sequence[int]) -> np.ndarray:
        """(N,) CTR of one request from its (K, D) scene embeddings and (K,) scene ids."""
        with torch.no_grad():
            return self.ctr(torch.from_numpy(scene_emb), torch.from_numpy(scene_ids), torch.tensor([user]),
                            torch.tensor(list(items))).numpy()


@pytest.fixture(scope="session")
def trained_models(tiny_run: TinyRun) -> TrainedModels:
    """The tiny run's trained modules in-process (PyTorch, no ONNX, Triton or adapters): what every served
    form and every adapter is checked against."""
    dataset = load_dataset(tiny_run.data_dir, splits=("test",))
    model, vocab = LarrCTR.load(tiny_run.ctr_dir("larr"))
    serving = ServingCTR(model, index_table(vocab["values"][0], dataset.info.num_users),
                         index_table(vocab["values"][1], dataset.info.num_items)).eval()
    return TrainedModels(TextEmbedder.from_pretrained(tiny_run.embedder_dir),
                         EmbeddingTokenizer.from_directory(tiny_run.embedder_dir), serving,
                         tuple(vocab["values"][2:]), dataset)  # fields: user, item, then the scene features


REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """A throw-away ``redis-server`` on 127.0.0.1:``port`` that a test may stop, pause and restart.

    No persistence (``--save '' --appendonly no``): a restart on the same port comes back empty, as a
    replaced Redis node would.
    """

    def __init__(self, port: int):
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        admin = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(200):  # bounded readiness poll
            try:
                if admin.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.025)
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"redis-server did not come up on port {self.port}")

    def pause(self) -> None:
        """SIGSTOP: a hung Redis that accepts connections but never answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a paused server would not act on SIGTERM
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def admin(self):
        import redis

        return redis.Redis(port=self.port, socket_timeout=2, client_name="admin")


@pytest.fixture(scope="session")
def redis_server_factory() -> Iterator[Callable[[], RedisServer]]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server binary not found (apt-get install redis-server)")
    pytest.importorskip("redis", reason="the redis client is not installed (pip install 'redis[hiredis]>=5')")
    servers: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(free_port())
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
