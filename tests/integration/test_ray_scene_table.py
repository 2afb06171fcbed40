"""``larr embed-scenes --engine ray`` on a real Ray cluster on loopback: a head and two worker nodes, each its own
``ray start`` process group, as on three hosts.

The table it builds must equal the local engine's (the same keys in the same order, rows within 1e-5: both run the
same fp32 embedder, only the batches' padding differs), and SIGKILL of one worker node while the actors embed must
still end with the full table. Skipped where ray is not installed (the ``ray`` extra; ``make setup`` installs it).

Resources: the head offers 1 CPU and each worker 2 (logical CPUs, on a 2-core box): two embedding actors (one per
worker, ``SPREAD``) and the tokenising tasks fit before the loss, and still fit on the survivor after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from larr.serving.server.ports import free_port

pytest.importorskip("ray.data", reason="ray is not installed (pip install -e '.[ray]')")

pytestmark = pytest.mark.integration

RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
EMBEDDER_VERSION = "ray-test-version"  # any string: both engines key with it; no ONNX export needed
POLL_S = 0.1


def ray_port() -> int:
    """A free port outside Ray's default worker-port range (10002-19999), where a head port would collide."""
    while True:
        port = free_port()
        if not 10000 <= port < 20000:
            return port


class RayCluster:
    """``ray start --head`` and worker nodes on loopback, each in its own session so a test can kill one whole."""

    def __init__(self, root: Path):
        self.root = root  # short: Ray's socket paths must stay under ~107 characters
        self.port, self.client_port = ray_port(), ray_port()
        self.address = f"127.0.0.1:{self.port}"
        # no auth token on loopback (Ray 2.60 makes one per cluster; the CLI would need it passed along)
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(root), "RAY_AUTH_MODE": "disabled"}
        self.nodes: list[subprocess.Popen] = []

    def _start(self, *args: str) -> subprocess.Popen:
        log = (self.root / f"node{len(self.nodes)}-{time.monotonic_ns()}.log").open("wb")  # a retry keeps the first log
        proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.nodes.append(proc)
        return proc

    def start(self, workers: int = 2, head_cpus: int = 1, worker_cpus: int = 2) -> None:
        self.join("--head", "--port", str(self.port), "--num-cpus", str(head_cpus), "--ray-client-server-port",
                  str(self.client_port), "--include-dashboard", "false", "--temp-dir", str(self.root))
        for _ in range(workers):  # one at a time: on a loaded box two raylets starting at once miss Ray's 30 s limit
            self.join("--address", self.address, "--num-cpus", str(worker_cpus))

    def join(self, *args: str, tries: int = 3) -> subprocess.Popen:
        """Start a node and wait until the cluster counts it; a node that did not come up is started again."""
        for _ in range(tries):
            proc = self._start("--node-ip-address", "127.0.0.1", *args)
            if self.wait_for_nodes(len(self.nodes)):
                return proc
            self.kill(proc)
            self.nodes.remove(proc)
        raise RuntimeError(f"a Ray node ({' '.join(args)}) never joined in {tries} tries; logs in {self.root}")

    def alive_nodes(self) -> int:
        """Nodes ``ray status`` lists as active (the GCS's view; the state API would need the dashboard)."""
        out = subprocess.run([RAY, "status", "--address", self.address], capture_output=True, text=True, env=self.env,
                             timeout=120)
        active = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out.stdout else ""
        return len(re.findall(r"^\s*1 node_", active, flags=re.M))

    def wait_for_nodes(self, n: int, attempts: int = 100) -> bool:
        """True once ``n`` nodes are alive; False when a node process exited or after ``attempts`` polls."""
        for _ in range(attempts):  # bounded poll: the box is shared, starts take seconds
            if self.alive_nodes() >= n:
                return True
            if any(proc.poll() is not None for proc in self.nodes):
                return False  # a node that exited never joins: its log says why
            time.sleep(POLL_S)
        return False

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL a node's whole process group (ray start, its raylet and its workers): a lost host."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in reversed(self.nodes):  # SIGTERM: `ray start --block` stops the node's processes
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.nodes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):  # whatever of the group outlived `ray start`
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    root = Path(tempfile.mkdtemp(prefix="larr-ray-", dir="/tmp"))
    cluster = RayCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def embed_scenes(tiny_run, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "larr", "embed-scenes", "--checkpoints", str(tiny_run.run_dir), "--out", str(out),
         "--embedder-version", EMBEDDER_VERSION, "--no-peak", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def read_table(directory: Path) -> tuple[list, np.ndarray]:
    from larr.serving.stores.table import TableStore

    index = json.loads((directory / "scene_table.json").read_text(encoding="utf-8"))
    store = TableStore.load(directory, EMBEDDER_VERSION)
    return [tuple(key) for key in index["keys"]], np.asarray(store.rows, dtype=np.float32)


@pytest.fixture(scope="module")
def local_table(tiny_run, tmp_path_factory) -> tuple[list, np.ndarray]:
    out = tmp_path_factory.mktemp("local_table")
    proc = embed_scenes(tiny_run, out, "--engine", "local")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    return read_table(out)


def test_the_ray_engine_builds_the_local_engines_table(ray_cluster, tiny_run, local_table, tmp_path):
    proc = embed_scenes(tiny_run, tmp_path, "--engine", "ray", "--address", ray_cluster.address, "--ray-actors", "2",
                        env=ray_cluster.env)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    keys, rows = read_table(tmp_path)
    local_keys, local_rows = local_table
    assert keys == local_keys  # the same distinct keys, the same order, the same hashes
    np.testing.assert_allclose(rows, local_rows, rtol=0, atol=1e-5)

    # a rerun finds every key in the shards: nothing is embedded again, the table is the same
    again = embed_scenes(tiny_run, tmp_path, "--engine", "ray", "--address", ray_cluster.address, "--ray-actors", "2",
                        env=ray_cluster.env)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    assert f"{len(keys)} already in shards" in output and "0 shards written now" in output
    assert read_table(tmp_path)[0] == keys


def test_losing_a_worker_mid_build_still_ends_with_the_full_table(ray_cluster, tiny_run, local_table, tmp_path):
    # small actor batches: many shards, so the build is still embedding when the first shard appears
    proc = embed_scenes(tiny_run, tmp_path, "--engine", "ray", "--address", ray_cluster.address, "--ray-actors", "2",
                        "--batch-size", "64", "--ray-tokenize-batch-size", "256", env=ray_cluster.env)
    shards = tmp_path / "shards"
    for _ in range(6000):  # bounded: until the actors have written a shard
        if any(shards.glob("part-*.parquet")) or proc.poll() is not None:
            break
        time.sleep(POLL_S)
    written_before_loss = len(list(shards.glob("part-*.parquet")))
    ray_cluster.kill(ray_cluster.nodes[2])  # the second worker node, with its actor
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    keys, rows = read_table(tmp_path)
    local_keys, local_rows = local_table
    assert written_before_loss < len(local_keys) // 64  # the loss came mid-build, not after it
    assert keys == local_keys
    np.testing.assert_allclose(rows, local_rows, rtol=0, atol=1e-5)
