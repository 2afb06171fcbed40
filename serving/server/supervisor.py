"""Keep a running tritonserver's python-backend stubs alive, and say so in Prometheus metrics.

Each python-backend model instance runs in its own stub process. When one dies (OOM killer, a segfault in
a native library, an operator's ``kill``), Triton 2.51 does not restart it: every request routed to that
instance fails with "Stub process '<instance>' is not healthy" for as long as the server runs, while
``/v2/health/ready`` and the model's ready endpoint keep answering 200 (measured; docs/serving-toolchain.md).

:class:`StubSupervisor` closes that gap from outside the server, the way a process supervisor would:

- every ``poll_s`` it lists the server's stub children in ``/proc`` and compares the count per model
  with the count seen once the server was ready;
- a model short of stubs is a fault only while Triton still calls it READY (a dead stub does not change that):
  one an operator unloaded through the model-control API is left unloaded and unwatched, and one loaded later
  (or whose stubs were not up at the first look) is watched from then on with the stubs it has when READY;
- a model with a missing stub is *unloaded* and *loaded* again through Triton's model-control API (the
  server runs with ``--model-control-mode=explicit``; the API is restricted to the admin key). The
  unload is deliberate: while the model is away, Triton's strict readiness (and the ensemble's) answer
  not-ready, so a load balancer stops sending traffic until the new stubs are up;
- ``larr_degraded{model,reason}`` is 1 while a model is being healed (or failed to reload, then retried
  with exponential back-off), and ``larr_stub_restarts_total{model}`` counts successful heals.

Only the stubs of python-backend models are watched: ONNX Runtime / TensorRT models run inside the
server process, whose death the orchestrator's liveness probe sees.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from larr.choices import ChoiceEnum

STUB_EXECUTABLE = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")  # where the stubs' shared-memory regions live
DEFAULT_POLL_S = 0.5
# A reload that keeps failing (e.g. the model's files were removed) is retried at most this often.
MAX_BACKOFF_S = 30.0
# How long to wait for a reloaded model's stubs to appear before calling the heal failed.
STUBS_UP_TIMEOUT_S = 60.0
# A repository-index query slower than this counts as unanswered (the supervisor then heals, as it would without it).
INDEX_TIMEOUT_S = 5.0
READY = "READY"  # Triton's model state for a loaded model (repository index), also while one of its stubs is dead


class DegradedReason(ChoiceEnum):
    """Why ``larr_degraded`` is 1 for a model (the ``reason`` label)."""

    STUB_EXITED = "stub_exited"  # a stub died; its model is being reloaded
    RELOAD_FAILED = "reload_failed"  # the reload raised; retried with back-off


@dataclass(frozen=True)
class Stub:
    """One running python-backend stub: its pid, the model it serves, and its shared-memory region."""

    pid: int
    model: str
    shm_region: str  # name under /dev/shm; Triton never removes a dead stub's region (the unload hangs)


def _stub_of(pid_dir: Path, server_pid: int, by_group: bool = False) -> Stub | None:
    """The stub running as ``/proc/<pid>``, if it is a live child stub of ``server_pid`` (``by_group``: a live stub in
    the process group that ``server_pid`` leads, which still holds the stubs once that server has died)."""
    try:
        stat = (pid_dir / "stat").read_text()
        cmdline = (pid_dir / "cmdline").read_bytes()
    except OSError:  # the process is gone, or not ours to read
        return None
    # stat: "pid (comm) state ppid ..."; comm may contain spaces or ')', so split after the last ')'.
    state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
    argv = cmdline.split(b"\0")
    if int(pgrp if by_group else ppid) != server_pid or state in ("Z", "X") or len(argv) < 2:
        return None
    if not argv[0].decode(errors="replace").endswith(STUB_EXECUTABLE):
        return None
    # argv: stub, <repository>/<model>/<version>/model.py, <shm region>, <shm sizes>, ..., <instance>, ...
    model = Path(argv[1].decode(errors="replace")).parent.parent.name
    shm_region = argv[2].decode(errors="replace") if len(argv) > 2 else ""
    return Stub(pid=int(pid_dir.name), model=model, shm_region=shm_region)


def find_stubs(server_pid: int, proc: Path = Path("/proc"), *, by_group: bool = False) -> list[Stub]:
    """The live python-backend stubs that ``server_pid`` started (Linux ``/proc``). ``by_group``: those in the process
    group ``server_pid`` leads instead of its children -- a server started in a session of its own
    (``run_triton_server``, ``larr serve``) that died unasked leaves its stubs there, re-parented and still running."""
    stubs = (_stub_of(entry, server_pid, by_group) for entry in proc.iterdir() if entry.name.isdigit())
    return [stub for stub in stubs if stub is not None]


def remove_regions(regions: Iterable[str], shm_dir: Path = SHM_DIR) -> None:
    """Unlink stubs' shared-memory regions: bare names under ``shm_dir``, never a path elsewhere."""
    for region in regions:
        if region and "/" not in region:
            with contextlib.suppress(FileNotFoundError):
                (shm_dir / region).unlink()


class ModelControl(Protocol):
    """The part of ``tritonclient.grpc.InferenceServerClient`` the supervisor uses."""

    def unload_model(self, model_name: str, headers: Mapping[str, str] | None = ...) -> Any: ...

    def load_model(self, model_name: str, headers: Mapping[str, str] | None = ...) -> Any: ...

    def get_model_repository_index(
        self, headers: Mapping[str, str] | None = ..., as_json: bool = ..., client_timeout: float | None = ...
    ) -> Any: ...


@dataclass
class _Healing:
    """A model whose stubs are short; ``next_try`` is a ``time.monotonic()`` instant."""

    reason: DegradedReason
    next_try: float
    backoff_s: float


class StubSupervisor:
    """Watches ``server_pid``'s stubs and reloads a model whose stub died (see the module docstring).

    ``start()`` takes the baseline (call it once the server is ready) and starts the watch thread;
    ``stop()`` ends it, and must come before the server is stopped (its stubs exit then). ``registry``
    holds the metrics; serve it with ``prometheus_client.start_http_server(port, addr, registry)``.
    """

    def __init__(
        self,
        server_pid: int,
        control: ModelControl,
        admin_headers: Mapping[str, str],
        *,
        poll_s: float = DEFAULT_POLL_S,
        registry: CollectorRegistry | None = None,
        list_stubs: Callable[[int], list[Stub]] = find_stubs,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        shm_dir: Path = SHM_DIR,
    ) -> None:
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        self.server_pid = server_pid
        self.poll_s = poll_s
        self._control = control
        self._headers = dict(admin_headers)
        self._list_stubs = list_stubs
        self._log = log
        self._clock = clock
        self._shm_dir = shm_dir
        self.registry = registry if registry is not None else CollectorRegistry()
        self._restarts = PromCounter(
            "larr_stub_restarts",
            "Python-backend models reloaded by the supervisor after one of their stub processes died",
            ["model"],
            registry=self.registry,
        )
        self._degraded = Gauge(
            "larr_degraded",
            "1 while a model is not fully served: a stub died and the model is being reloaded (reason label)",
            ["model", "reason"],
            registry=self.registry,
        )
        self._expected: Counter[str] = Counter()
        self._alive: dict[int, Stub] = {}  # pid -> stub, as of the last check
        self._dead: list[Stub] = []  # stubs that died; their shared memory is removed once healed
        self._healing: dict[str, _Healing] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def known_stubs(self) -> list[Stub]:
        """Every stub seen since ``start()`` whose shared memory is not yet removed: those alive at the last check
        and those that died since the last heal. What a server that died unasked leaves behind is among them
        (after such a death a check sees no stub at all, so "alive at the last check" alone would lose them)."""
        return [*self._alive.values(), *self._dead]

    @property
    def expected(self) -> Mapping[str, int]:
        """Stubs per watched model: the counts a healthy server has (as at ready; a model an operator unloads leaves,
        one loaded later joins)."""
        return dict(self._expected)

    def degraded(self) -> dict[str, DegradedReason]:
        """Models being healed now, with the reason."""
        return {model: healing.reason for model, healing in self._healing.items()}

    def restarts(self, model: str) -> int:
        """Successful reloads of ``model`` so far (the ``larr_stub_restarts_total`` sample)."""
        return int(self.registry.get_sample_value("larr_stub_restarts_total", {"model": model}) or 0)

    def start(self) -> None:
        for model, count in self._count(self._observe()).items():
            self._watch(model, count)
        self._thread = threading.Thread(target=self._run, name="larr-stub-supervisor", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Stop healing from now on without waiting (safe in a signal handler, before the server shuts down)."""
        self._stop.set()

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join()

    def check_once(self) -> None:
        """One round: notice models with missing stubs, then try to heal those that are due."""
        if self._stop.is_set():  # the server is shutting down: its stubs exit on purpose
            return
        current = self._count(self._observe())
        now = self._clock()
        short = [model for model, n in self._expected.items() if current[model] < n and model not in self._healing]
        # A watched model with extra stubs is left alone: an operator's load of a loaded model runs the new
        # instances beside the old ones until they take over, so the count is back to normal after it.
        joined = [model for model in current if model not in self._expected and model not in self._healing]
        ready = self._ready_models() if short or joined else None
        for model in short:
            if ready is not None and model not in ready:  # unloaded (or unloading) on purpose: not a fault
                self._log(f"larr supervisor: {model} was unloaded through the model-control API; "
                          "not watched until it is loaded again")
                del self._expected[model]
                self._forget_dead(model)
                continue
            self._log(f"larr supervisor: {model} has {current[model]} of {self._expected[model]} stubs; reloading it")
            self._mark(model, DegradedReason.STUB_EXITED, _Healing(DegradedReason.STUB_EXITED, now, 1.0))
        for model in joined:
            if ready is not None and model in ready:  # loaded (again) and up: these are its stubs from now on
                self._log(f"larr supervisor: watching {model} with {current[model]} stubs")
                self._watch(model, current[model])
        for model, healing in list(self._healing.items()):
            if healing.next_try <= now and not self._stop.is_set():
                self._heal(model, healing)

    def _observe(self) -> list[Stub]:
        """The live stubs now; remembers the shared-memory regions of those that died since the last look."""
        stubs = self._list_stubs(self.server_pid)
        live = {stub.pid: stub for stub in stubs}
        self._dead.extend(stub for pid, stub in self._alive.items() if pid not in live)
        self._alive = live
        return stubs

    def _watch(self, model: str, stubs: int) -> None:
        self._expected[model] = stubs
        self._restarts.labels(model=model)  # export 0s, so a dashboard sees the series before the first fault
        for reason in DegradedReason:
            self._degraded.labels(model=model, reason=str(reason)).set(0)

    def _ready_models(self) -> set[str] | None:
        """Models Triton reports READY (one with a dead stub included), or None when the index cannot be read: then
        a short model is healed, as the likelier event (its reload fails and backs off if the server is going)."""
        try:
            index = self._control.get_model_repository_index(
                headers=self._headers, as_json=True, client_timeout=INDEX_TIMEOUT_S
            )
        except Exception as error:  # noqa: BLE001 - any failure to read it means "unknown", never a crash
            self._log(f"larr supervisor: cannot read the repository index ({error})")
            return None
        return {entry["name"] for entry in index.get("models", []) if entry.get("state") == READY}

    @staticmethod
    def _count(stubs: list[Stub]) -> Counter[str]:
        return Counter(stub.model for stub in stubs)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_once()
            except Exception as error:  # noqa: BLE001 - the watch must outlive any one failure
                self._log(f"larr supervisor: check failed: {error!r}")

    def _heal(self, model: str, healing: _Healing) -> None:
        try:
            # Unload first: the old instances hold dead stubs, and Triton reports not-ready until the load ends.
            with contextlib.suppress(Exception):  # already unloaded by an earlier, failed attempt
                self._control.unload_model(model, headers=self._headers)
            self._control.load_model(model, headers=self._headers)
            self._wait_for_stubs(model)
        except Exception as error:  # noqa: BLE001 - retried with back-off; the reason is in the metric
            self._log(f"larr supervisor: reloading {model} failed ({error}); retrying in {healing.backoff_s:.0f} s")
            retry = _Healing(
                DegradedReason.RELOAD_FAILED,
                self._clock() + healing.backoff_s,
                min(healing.backoff_s * 2, MAX_BACKOFF_S),
            )
            self._mark(model, DegradedReason.RELOAD_FAILED, retry)
            return
        self._restarts.labels(model=model).inc()
        self._clear(model)
        self._remove_dead_regions()
        self._log(f"larr supervisor: {model} reloaded; all {self._expected[model]} stubs are up")

    def _wait_for_stubs(self, model: str) -> None:
        deadline = time.monotonic() + STUBS_UP_TIMEOUT_S
        while (up := self._count(self._observe())[model]) < self._expected[model]:
            if time.monotonic() > deadline or self._stop.is_set():
                raise RuntimeError(f"{model} loaded but has {up} of {self._expected[model]} stubs")
            time.sleep(self.poll_s / 5)

    def _forget_dead(self, model: str) -> None:
        """Drop an unloaded model's dead stubs (so ``_dead`` stays bounded over any number of unloads), unlinking
        whatever shared memory a clean unload left, which is normally none."""
        remove_regions((stub.shm_region for stub in self._dead if stub.model == model), self._shm_dir)
        self._dead = [stub for stub in self._dead if stub.model != model]

    def _remove_dead_regions(self) -> None:
        """Unlink dead stubs' shared memory (1 MiB or more each): Triton 2.51 never finishes unloading an
        instance whose stub died, so nothing else would. The hung instance keeps its mapping until exit."""
        remove_regions((stub.shm_region for stub in self._dead), self._shm_dir)
        self._dead.clear()

    def _mark(self, model: str, reason: DegradedReason, healing: _Healing) -> None:
        self._healing[model] = healing
        for each in DegradedReason:
            self._degraded.labels(model=model, reason=str(each)).set(1 if each is reason else 0)

    def _clear(self, model: str) -> None:
        self._healing.pop(model, None)
        for each in DegradedReason:
            self._degraded.labels(model=model, reason=str(each)).set(0)
