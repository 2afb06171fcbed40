"""The baseline many teams write first: a FastAPI/uvicorn service around the models, with an in-process cache.

Two ways to build it:

* ``--repository DIR`` (what ``larr bench`` runs): the *same exported model repository and runtime* as the Triton
  ensemble — the feature cache's store, the embedder and CTR graphs through the adapters' own runtimes (ONNX
  Runtime by default), in one uvicorn process (:class:`RepositoryScorer`, over
  :class:`larr.benchmarks.inprocess.InProcessPipeline`). Triton / FastAPI then compares servers, not runtimes.
* ``--embedder DIR --ctr DIR``: the PyTorch modules in eager mode with a dict cache (:class:`TorchScorer`), the
  version most teams write first.

    python -m larr.benchmarks.fastapi_service --repository runs/demo/repository --port 8080
    python -m larr.benchmarks.fastapi_service --embedder runs/demo/run/embed/model \\
        --ctr runs/demo/run/ctr/larr --num-users 400 --num-items 192 --port 8080

    POST /score  {"scene_text": ["lunch time", "downpour", ...], "user_id": 7, "item_ids": [1, 2, 3]}
              -> {"ctr": [0.12, 0.34, 0.05]}
    GET  /health -> {"status": "ok"}

Same models and the same work as the LARR ensemble: per-feature texts formatted and tokenised
exactly as the feature cache does (``larr.text``, ``larr.tokenization``), misses embedded by the
``TextEmbedder`` in one batch per request, the ``ServingCTR`` head on the (K, D) scene. The cache is a
plain, unbounded ``dict`` keyed like the feature cache (feature index, text), shared by the worker
threads. One uvicorn process; the endpoint is a plain ``def`` (FastAPI runs it in its thread pool,
and PyTorch releases the GIL while it computes).
"""

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

HEALTH_PATH = "/health"


class RepositoryScorer:
    """The LARR request path on the exported repository's own store and runtimes (the server's, without Triton)."""

    def __init__(self, repository: Path):
        from larr.benchmarks.inprocess import InProcessPipeline

        self.pipeline = InProcessPipeline(repository)

    def score(self, scene_text: Sequence[str], user_id: int, item_ids: Sequence[int]) -> list[float]:
        from larr.benchmarks.workload import BenchRequest
        from larr.serving.errors import RequestError

        request = BenchRequest(tuple(scene_text), int(user_id), tuple(int(i) for i in item_ids))
        try:
            return self.pipeline.score(request).tolist()
        except RequestError as error:  # the server's own request checks: a client error, 422
            raise ValueError(str(error)) from error


class TorchScorer:
    """The LARR request path on PyTorch modules with a dict cache."""

    def __init__(self, embedder_dir: Path, ctr_dir: Path, num_users: int, num_items: int, device: str = "cpu"):
        import torch

        from larr.models.ctr_model import LarrCTR, ServingCTR, index_table
        from larr.models.embedder import TextEmbedder
        from larr.tokenization import EmbeddingTokenizer

        self.torch = torch
        self.device = torch.device(device)
        self.embedder = TextEmbedder.from_pretrained(embedder_dir).eval().to(self.device)
        self.tokenizer = EmbeddingTokenizer.from_directory(embedder_dir)
        model, vocab = LarrCTR.load(Path(ctr_dir))
        user_index, item_index = index_table(vocab["values"][0], num_users), index_table(vocab["values"][1], num_items)
        self.ctr = ServingCTR(model, user_index, item_index).eval().to(self.device)
        self.features: tuple[str, ...] = tuple(vocab["fields"][2:])
        self.scene_index = [{str(v): i for i, v in enumerate(values, start=1)} for values in vocab["values"][2:]]
        self.cache: dict[tuple[int, str], object] = {}

    def score(self, scene_text: Sequence[str], user_id: int, item_ids: Sequence[int]) -> list[float]:
        from larr.text import format_scene_feature

        torch = self.torch
        if len(scene_text) != len(self.features):
            raise ValueError(f"scene_text has {len(scene_text)} texts; the scene schema has {len(self.features)}")
        keys = [(k, text) for k, text in enumerate(scene_text)]
        missing = list(dict.fromkeys(key for key in keys if key not in self.cache))
        with torch.inference_mode():
            if missing:
                texts = [format_scene_feature(self.features[k], t) for k, t in missing]
                input_ids, attention_mask = self.tokenizer(texts)  # (M, T) each
                vectors = self.embedder(
                    torch.from_numpy(input_ids).to(self.device), torch.from_numpy(attention_mask).to(self.device)
                )  # (M, D)
                for key, vector in zip(missing, vectors):
                    self.cache[key] = vector
            scene_emb = torch.stack([self.cache[key] for key in keys])  # (K, D)
            scene_ids = torch.tensor([self.scene_index[k].get(t, 0) for k, t in keys], device=self.device)  # (K,)
            user = torch.tensor([user_id], device=self.device)
            items = torch.tensor(list(item_ids), device=self.device)
            ctr = self.ctr(scene_emb, scene_ids, user, items)  # (N,)
        return ctr.cpu().tolist()


def create_app(scorer: RepositoryScorer | TorchScorer):
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel

    class ScoreRequest(BaseModel):
        scene_text: list[str]
        user_id: int
        item_ids: list[int]

    app = FastAPI(title=f"LARR scorer (FastAPI baseline, {type(scorer).__name__})")

    @app.get(HEALTH_PATH)
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/score")
    def score(request: ScoreRequest) -> dict:
        try:
            return {"ctr": scorer.score(request.scene_text, request.user_id, request.item_ids)}
        except ValueError as error:
            raise HTTPException(status_code=422, detail=str(error)) from error

    return app


@contextlib.contextmanager
def run_fastapi_service(
    repository: Path, *, port: int | None = None, startup_timeout_s: float = 180.0,
) -> Iterator[str]:
    """Start the service on ``repository`` (:class:`RepositoryScorer`) in a child process on loopback, wait for
    ``/health``, yield its base URL, stop it."""
    import httpx

    from larr.serving.server.ports import free_port

    port = port or free_port()
    command = [
        sys.executable, "-m", "larr.benchmarks.fastapi_service", "--repository", str(repository), "--port", str(port),
    ]
    # A file, not a pipe: nobody reads a pipe while the benchmark runs, and a full one would block the service.
    log = tempfile.NamedTemporaryFile(prefix="larr-fastapi-", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                output = Path(log.name).read_text(encoding="utf-8", errors="replace")
                raise RuntimeError(f"the FastAPI service exited with {process.returncode}:\n{output[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base_url + HEALTH_PATH, timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the FastAPI service did not answer {HEALTH_PATH} within {startup_timeout_s:.0f} s")
            time.sleep(0.25)
        yield base_url
    finally:
        if process.poll() is None:
            process.terminate()  # uvicorn shuts down gracefully on SIGTERM
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m larr.benchmarks.fastapi_service", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repository", type=Path,
                        help="exported model repository: serve its store and runtimes (the Triton ensemble's)")
    parser.add_argument("--embedder", type=Path, help="without --repository: TextEmbedder folder (embed/model)")
    parser.add_argument("--ctr", type=Path, help="without --repository: LarrCTR folder (ctr/larr)")
    parser.add_argument("--num-users", type=int, help="without --repository: the trained user range")
    parser.add_argument("--num-items", type=int, help="without --repository: the trained item range")
    parser.add_argument("--device", default="cpu", help="without --repository: cpu | cuda")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    eager = (args.embedder, args.ctr, args.num_users, args.num_items)
    if (args.repository is None) == (None in eager):
        parser.error("give --repository, or all of --embedder, --ctr, --num-users and --num-items (not both)")

    import uvicorn

    scorer = (RepositoryScorer(args.repository) if args.repository is not None
              else TorchScorer(args.embedder, args.ctr, args.num_users, args.num_items, args.device))
    uvicorn.run(create_app(scorer), host=args.host, port=args.port, workers=1, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
