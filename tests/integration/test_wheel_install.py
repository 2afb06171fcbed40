"""An installed wheel works with no source tree: built from the project's files, installed into a fresh virtual
environment, it exports the session's tiny run, serves it with ``larr serve`` and answers ``larr query``.

The environment sees this interpreter's packages (``--system-site-packages``), so torch and Triton are not
installed again; that includes this checkout's editable larr, whose finder setuptools appends to
``sys.meta_path``, after the path-based finder: the wheel's larr, on the environment's own ``sys.path``, wins.
The test checks that it does, in the environment and in Triton's python-backend stubs, and runs every command
from a folder outside the checkout.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from larr.contract import CTR_MODEL, EMBEDDER_MODEL, ENSEMBLE_NAME, FEATURE_CACHE_MODEL
from larr.layout import RunLayout, packaged_adapters_dir
from larr.serving.server.ports import free_ports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_MODELS = (FEATURE_CACHE_MODEL, EMBEDDER_MODEL, CTR_MODEL)
WHERE_MODEL = "where_is_larr"  # a python model that writes down which larr its stub imports
WHERE_FILE = "larr_file.txt"
_WHERE_MODEL_PY = '''\
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

import larr


class TritonPythonModel:
    def initialize(self, args):
        Path(args["model_repository"], "{where_file}").write_text(larr.__file__)

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.zeros(1, np.float32))]) for _ in requests]
'''


@dataclass(frozen=True)
class Installed:
    """A virtual environment holding the wheel built from this checkout, and a folder outside the checkout."""

    venv: Path
    work: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def run(self, *argv: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(a) for a in argv], cwd=self.work, capture_output=True, text=True, timeout=timeout,
                                check=False)
        assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result


def project_files(root: Path) -> list[Path]:
    """The files a clone of the project plus its uncommitted work holds (no build output, no runs): git's tracked
    and not-ignored untracked files that exist."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [Path(name) for name in listed if name and (root / name).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the project's git checkout to know its files")
    tmp = tmp_path_factory.mktemp("wheel_install")
    # Built from a copy: an in-tree build reuses build/lib, where files deleted from the source would linger.
    source = tmp / "source"
    for name in project_files(ROOT):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(wheels)], cwd=tmp, check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("larr-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    work = tmp / "work"
    work.mkdir()
    environment = Installed(venv, work)
    # --ignore-installed: the checkout's editable larr, visible through the system site, is left alone
    environment.run(environment.bin("python"), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel)
    return environment


def test_the_environment_imports_the_wheel_and_its_adapters(installed: Installed):
    probe = (
        "import json, sys, larr, larr.layout; "
        "adapters = larr.layout.packaged_adapters_dir(); "
        "print(json.dumps({'larr': larr.__file__, 'adapters': str(adapters), "
        "'files': sorted(p.relative_to(adapters).as_posix() for p in adapters.glob('*/1/model.py')), "
        "'prefix': sys.prefix}))"
    )
    found = json.loads(installed.run(installed.bin("python"), "-c", probe).stdout)
    venv = installed.venv.resolve()
    assert Path(found["prefix"]).resolve() == venv
    for path in (found["larr"], found["adapters"]):
        assert Path(path).resolve().is_relative_to(venv), path
        assert not Path(path).resolve().is_relative_to(ROOT), path
    assert found["files"] == [f"{name}/1/model.py" for name in sorted(ADAPTER_MODELS)]


@pytest.fixture(scope="module")
def exported(installed: Installed, tiny_run) -> Path:
    """``larr export`` of the tiny run from the environment, without --out: into a run folder of links to the
    session's run (which tests never write into), so the default output lands in it."""
    run = installed.work / "run"
    run.mkdir()
    for entry in tiny_run.run_dir.iterdir():
        if entry.name not in ("config.yaml", "model_repository"):
            (run / entry.name).symlink_to(entry)
    config = yaml.safe_load((tiny_run.run_dir / "config.yaml").read_text(encoding="utf-8"))
    config["data"] = str(tiny_run.data_dir)  # the session's dataset wherever the run names it from
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    installed.run(installed.bin("larr"), "export", "--checkpoints", run, "--target", "cpu")
    return RunLayout(run).model_repository_dir


def test_the_export_copies_the_installed_adapters(exported: Path, installed: Installed):
    adapters = installed.venv.glob("lib/python*/site-packages/larr/model_repository")
    (installed_adapters,) = adapters
    for name in ADAPTER_MODELS:
        copied = (exported / name / "1" / "model.py").read_bytes()
        assert copied == (installed_adapters / name / "1" / "model.py").read_bytes()
        assert copied == (packaged_adapters_dir() / name / "1" / "model.py").read_bytes()
    assert (exported / ENSEMBLE_NAME / "config.pbtxt").is_file()


def write_where_model(repository: Path) -> None:
    config = mc.ModelConfig(name=WHERE_MODEL, backend="python", max_batch_size=0)
    config.input.add(name="IN", data_type=mc.TYPE_FP32, dims=[1])
    config.output.add(name="OUT", data_type=mc.TYPE_FP32, dims=[1])
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    (repository / WHERE_MODEL / "1").mkdir(parents=True)
    (repository / WHERE_MODEL / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")
    (repository / WHERE_MODEL / "1" / "model.py").write_text(_WHERE_MODEL_PY.format(where_file=WHERE_FILE))


@contextlib.contextmanager
def larr_serve(installed: Installed, repository: Path) -> Iterator[str]:
    """The environment's ``larr serve`` on free loopback ports until ready; yields its gRPC url; SIGTERM at the end."""
    grpc_port, http_port, metrics_port, supervisor_port = free_ports(4)
    process = subprocess.Popen(
        [str(installed.bin("larr")), "serve", "--model-repository", str(repository), "--admin-key", "wheel-test",
         "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
         "--supervisor-port", str(supervisor_port)],
        cwd=installed.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"127.0.0.1:{grpc_port}"
    client = grpcclient.InferenceServerClient(url)
    try:
        deadline = time.monotonic() + 300
        while not _ready(client):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"larr serve did not become ready (exit code {process.poll()})")
            time.sleep(0.2)
        yield url
    except BaseException as error:
        process.send_signal(signal.SIGTERM)
        error.add_note(f"larr serve printed:\n{process.communicate(timeout=120)[0][-6000:]}")
        raise
    finally:
        client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=120)


def _ready(client: grpcclient.InferenceServerClient) -> bool:
    with contextlib.suppress(Exception):  # not listening yet
        return client.is_server_ready()
    return False


def test_the_environment_serves_the_export_and_answers_a_query(exported: Path, installed: Installed, tiny_run):
    from larr.data.schema import load_dataset

    repository = installed.work / "served"
    shutil.copytree(exported, repository, symlinks=True)
    write_where_model(repository)
    dataset = load_dataset(tiny_run.data_dir, splits=("test",))
    scene = dict(zip(dataset.info.scene_features, dataset.test.scene_row(0)))
    user, items = int(dataset.test.user_id[0]), list(range(0, dataset.info.num_items, 9))[:20]
    query = ["query", "--user-id", str(user), "--items", ",".join(map(str, items)), "--json",
             *(arg for name, text in scene.items() for arg in ("--scene", f"{name}={text}"))]
    with larr_serve(installed, repository) as url:
        answer = json.loads(installed.run(installed.bin("larr"), *query, "--url", url).stdout)
        expected = in_process_ctr(tiny_run, repository, scene, user, items)

    stub_larr = Path((repository / WHERE_MODEL / WHERE_FILE).read_text()).resolve()  # beside its config.pbtxt
    assert stub_larr.is_relative_to(installed.venv.resolve()) and not stub_larr.is_relative_to(ROOT), stub_larr
    assert answer["user_id"] == user and answer["scene"] == scene
    served = {row["item_id"]: row["ctr"] for row in answer["items"]}
    assert sorted(served) == sorted(items)
    np.testing.assert_allclose([served[item] for item in items], expected, atol=1e-4, rtol=0)


def in_process_ctr(tiny_run, repository: Path, scene: dict[str, str], user: int, items: list[int]) -> np.ndarray:
    """The same request through the trained PyTorch modules of the run: each feature embedded alone, then the CTR
    model over the served scene vocabulary's ids."""
    import torch

    from larr.data.schema import load_dataset_info
    from larr.models.ctr_model import LarrCTR, ServingCTR, index_table
    from larr.models.embedder import TextEmbedder, embed_texts
    from larr.serving.feature_cache import SceneVocab
    from larr.text import format_scene_feature
    from larr.tokenization import EmbeddingTokenizer

    info = load_dataset_info(tiny_run.data_dir)
    model, vocab = LarrCTR.load(tiny_run.ctr_dir("larr"))
    serving = ServingCTR(model, index_table(vocab["values"][0], info.num_users),
                         index_table(vocab["values"][1], info.num_items)).eval()
    embedder = TextEmbedder.from_pretrained(tiny_run.embedder_dir)
    tokenizer = EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)
    texts = [scene[name] for name in info.scene_features]
    scene_emb = embed_texts(embedder, tokenizer, [format_scene_feature(f, t) for f, t in zip(info.scene_features, texts)])
    scene_ids = SceneVocab.load(repository / FEATURE_CACHE_MODEL / "1" / "scene_vocab.json").ids(texts)
    with torch.no_grad():
        return serving(torch.from_numpy(scene_emb), torch.from_numpy(scene_ids), torch.tensor([user]),
                       torch.tensor(items)).numpy()
