"""Unit tests of larr.serving.server.supervisor: finding stubs in /proc, and the heal / back-off logic (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from larr.serving.server.supervisor import MAX_BACKOFF_S, STUB_EXECUTABLE, DegradedReason, Stub, StubSupervisor, find_stubs

SERVER_PID = 4242
STUB_BIN = f"/opt/tritonserver/backends/python/{STUB_EXECUTABLE}"


def _process(proc: Path, pid: int, ppid: int, argv: list[str], comm: str = "triton_python_b", state: str = "S",
             pgrp: int | None = None) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "stat").write_text(f"{pid} ({comm}) {state} {ppid} {pgrp or pid} 0 0 -1 4194304 100 0")
    (folder / "cmdline").write_bytes(b"\0".join(arg.encode() for arg in argv) + b"\0")


def _stub_argv(model: str, region: str) -> list[str]:
    return [STUB_BIN, f"/repo/{model}/1/model.py", region, "1048576", "1048576", "8273", "/b", "336", f"{model}_0_0"]


def test_find_stubs_keeps_only_live_stub_children_of_the_server(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _process(proc, 10, SERVER_PID, _stub_argv("feature_cache", "region_a"))
    # A comm with spaces and a ')' must not shift the fields that follow it.
    _process(proc, 11, SERVER_PID, _stub_argv("ctr", "region_b"), comm="odd ) name")
    _process(proc, 12, SERVER_PID, _stub_argv("embedder", "region_c"), state="Z")  # a zombie: dead
    _process(proc, 13, 999, _stub_argv("embedder", "region_d"))  # another server's stub
    _process(proc, 14, SERVER_PID, ["/usr/bin/python3", "/repo/embedder/1/model.py"])  # not a stub
    (proc / "self").mkdir()  # non-numeric entries are skipped

    stubs = sorted(find_stubs(SERVER_PID, proc), key=lambda stub: stub.pid)

    assert stubs == [Stub(10, "feature_cache", "region_a"), Stub(11, "ctr", "region_b")]


def test_find_stubs_by_group_finds_the_stubs_a_dead_server_left(tmp_path: Path) -> None:
    """Once the server died its stubs are re-parented (ppid 1) but stay in the process group it led."""
    proc = tmp_path / "proc"
    _process(proc, 10, 1, _stub_argv("feature_cache", "region_a"), pgrp=SERVER_PID)  # orphaned, in the group
    _process(proc, 11, SERVER_PID, _stub_argv("ctr", "region_b"), pgrp=SERVER_PID)  # still a child, in the group
    _process(proc, 12, 1, _stub_argv("embedder", "region_c"), pgrp=999)  # another group's orphan
    _process(proc, 13, 1, _stub_argv("embedder", "region_d"), pgrp=SERVER_PID, state="Z")  # dead
    _process(proc, 14, 1, ["/usr/bin/python3", "x.py", "y"], pgrp=SERVER_PID)  # not a stub

    by_group = sorted(find_stubs(SERVER_PID, proc, by_group=True), key=lambda stub: stub.pid)

    assert by_group == [Stub(10, "feature_cache", "region_a"), Stub(11, "ctr", "region_b")]
    assert find_stubs(SERVER_PID, proc) == [Stub(11, "ctr", "region_b")]  # children only


class FakeServer:
    """Stubs that a test kills and that the fake model-control API brings back, with the calls it got."""

    def __init__(self, models: dict[str, int]) -> None:
        self.stubs: list[Stub] = []
        self.calls: list[tuple[str, str]] = []
        self.fail_loads = 0
        self.index_fails = False
        self.unavailable: set[str] = set()  # models Triton would not list as READY (unloaded, loading)
        self._counts = dict(models)
        self._next_pid = 100
        for model, count in models.items():
            for _ in range(count):
                self._spawn(model)

    def _spawn(self, model: str) -> None:
        self._next_pid += 1
        self.stubs.append(Stub(self._next_pid, model, f"region_{self._next_pid}"))

    def list_stubs(self, server_pid: int) -> list[Stub]:
        assert server_pid == SERVER_PID
        return list(self.stubs)

    def kill(self, model: str) -> Stub:
        victim = next(stub for stub in self.stubs if stub.model == model)
        self.stubs.remove(victim)
        return victim

    def unload_model(self, model_name: str, headers: dict[str, str] | None = None) -> None:
        assert headers == {"key": "k"}
        self.calls.append(("unload", model_name))
        self.stubs = [stub for stub in self.stubs if stub.model != model_name]
        self.unavailable.add(model_name)

    def load_model(self, model_name: str, headers: dict[str, str] | None = None) -> None:
        assert headers == {"key": "k"}
        self.calls.append(("load", model_name))
        if self.fail_loads:
            self.fail_loads -= 1
            raise RuntimeError("failed to load")
        for _ in range(self._counts[model_name]):
            self._spawn(model_name)
        self.unavailable.discard(model_name)

    def get_model_repository_index(
        self, headers: dict[str, str] | None = None, as_json: bool = False, client_timeout: float | None = None
    ) -> dict[str, list[dict[str, str]]]:
        """As tritonclient's JSON form: a model whose stub died is still READY (Triton 2.51)."""
        assert headers == {"key": "k"} and as_json and client_timeout
        if self.index_fails:
            raise ConnectionError("server unreachable")
        models = {stub.model for stub in self.stubs} | set(self._counts)
        return {"models": [{"name": model, "version": "1", "state": "UNAVAILABLE" if model in self.unavailable
                            else "READY"} for model in sorted(models)]}

    def operator(self, action: str, model: str) -> None:
        """An operator's unload / load through the admin API: not a call the supervisor made."""
        (self.unload_model if action == "unload" else self.load_model)(model, headers={"key": "k"})
        self.calls.pop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _supervisor(server: FakeServer, clock: Clock, shm_dir: Path) -> StubSupervisor:
    supervisor = StubSupervisor(
        SERVER_PID,
        server,
        {"key": "k"},
        list_stubs=server.list_stubs,
        log=lambda _line: None,
        clock=clock,
        shm_dir=shm_dir,
    )
    for model, count in supervisor._count(supervisor._observe()).items():  # start() without its thread
        supervisor._watch(model, count)
    return supervisor


def _degraded(supervisor: StubSupervisor, model: str, reason: DegradedReason) -> float | None:
    return supervisor.registry.get_sample_value("larr_degraded", {"model": model, "reason": str(reason)})


def test_a_dead_stub_gets_its_model_unloaded_then_loaded_and_its_shared_memory_removed(tmp_path: Path) -> None:
    server = FakeServer({"feature_cache": 2, "ctr": 1})
    supervisor = _supervisor(server, Clock(), tmp_path)
    victim = server.kill("feature_cache")
    (tmp_path / victim.shm_region).write_bytes(b"x")
    (tmp_path / "region_of_a_live_stub").write_bytes(b"x")

    supervisor.check_once()

    assert server.calls == [("unload", "feature_cache"), ("load", "feature_cache")]
    assert supervisor.restarts("feature_cache") == 1 and supervisor.restarts("ctr") == 0
    assert supervisor.degraded() == {}
    assert _degraded(supervisor, "feature_cache", DegradedReason.STUB_EXITED) == 0
    assert not (tmp_path / victim.shm_region).exists()
    assert (tmp_path / "region_of_a_live_stub").exists()


def test_known_stubs_keep_a_dead_servers_stubs_until_their_memory_is_removed(tmp_path: Path) -> None:
    """What run_triton_server and larr serve clear after a server died unasked: the healed model's new stubs included, and still known
    after a check that saw no stub at all (the server's death re-parents them)."""
    server = FakeServer({"feature_cache": 1, "ctr": 1})
    supervisor = _supervisor(server, Clock(), tmp_path)
    first = list(server.stubs)
    server.kill("feature_cache")
    supervisor.check_once()  # healed: a new feature_cache stub, the dead one's memory removed
    healed = [stub for stub in server.stubs if stub not in first]
    assert healed and sorted(supervisor.known_stubs, key=lambda s: s.pid) == sorted(server.stubs, key=lambda s: s.pid)

    gone = list(server.stubs)
    server.stubs = []  # the whole server died
    supervisor.stop()  # stopping: no more heals, so what it knows stays
    supervisor._observe()  # one last look, as the watch thread may have taken before it stopped
    assert sorted(supervisor.known_stubs, key=lambda s: s.pid) == sorted(gone, key=lambda s: s.pid)


def test_a_healthy_server_is_left_alone(tmp_path: Path) -> None:
    server = FakeServer({"feature_cache": 1, "embedder": 1, "ctr": 1})
    supervisor = _supervisor(server, Clock(), tmp_path)
    for _ in range(3):
        supervisor.check_once()
    assert server.calls == []
    assert supervisor.expected == {"feature_cache": 1, "embedder": 1, "ctr": 1}


def test_a_failing_reload_is_reported_and_retried_with_growing_back_off(tmp_path: Path) -> None:
    server = FakeServer({"embedder": 1})
    clock = Clock()
    supervisor = _supervisor(server, clock, tmp_path)
    server.kill("embedder")
    server.fail_loads = 3

    supervisor.check_once()  # first try fails: retry after 1 s
    assert supervisor.degraded() == {"embedder": DegradedReason.RELOAD_FAILED}
    assert _degraded(supervisor, "embedder", DegradedReason.RELOAD_FAILED) == 1
    assert _degraded(supervisor, "embedder", DegradedReason.STUB_EXITED) == 0

    attempts = []
    for step in (0.5, 0.6, 1.0, 1.5, 2.0, 2.1):  # times since the previous check
        clock.now += step
        before = len(server.calls)
        supervisor.check_once()
        attempts.append(len(server.calls) > before)
    # Checks at +0.5, 1.1, 2.1, 3.6, 5.6, 7.7 s. Failures move the next try 1 s, 2 s, then 4 s on: due at
    # 1.0 (tried at 1.1, fails), 3.1 (tried at 3.6, fails: the third), 7.6 (tried at 7.7, succeeds).
    assert attempts == [False, True, False, True, False, True]
    assert supervisor.restarts("embedder") == 1 and supervisor.degraded() == {}
    assert _degraded(supervisor, "embedder", DegradedReason.RELOAD_FAILED) == 0


def test_back_off_is_capped(tmp_path: Path) -> None:
    server = FakeServer({"ctr": 1})
    clock = Clock()
    supervisor = _supervisor(server, clock, tmp_path)
    server.kill("ctr")
    server.fail_loads = 100
    supervisor.check_once()
    for _ in range(20):
        clock.now += MAX_BACKOFF_S
        supervisor.check_once()
    assert supervisor._healing["ctr"].backoff_s == MAX_BACKOFF_S
    # Every check once the cap is reached finds the retry due: one unload + load per check.
    assert len(server.calls) == 2 * 21


def test_no_healing_once_stop_was_requested(tmp_path: Path) -> None:
    server = FakeServer({"ctr": 1})
    supervisor = _supervisor(server, Clock(), tmp_path)
    supervisor.request_stop()
    server.kill("ctr")  # e.g. the server shutting down
    supervisor.check_once()
    assert server.calls == []


def test_a_model_an_operator_unloads_stays_unloaded_and_is_watched_again_once_loaded(tmp_path: Path) -> None:
    server = FakeServer({"embedder": 1, "ctr": 1})
    supervisor = _supervisor(server, Clock(), tmp_path)

    server.operator("unload", "embedder")  # its stub exits, and Triton no longer lists it as READY
    for _ in range(3):
        supervisor.check_once()
    assert server.calls == [] and supervisor.expected == {"ctr": 1}
    assert supervisor.degraded() == {} and _degraded(supervisor, "embedder", DegradedReason.STUB_EXITED) == 0
    assert [stub.model for stub in supervisor.known_stubs] == ["ctr"]  # the unloaded stub is forgotten

    server.operator("load", "embedder")
    supervisor.check_once()
    assert supervisor.expected == {"embedder": 1, "ctr": 1}
    server.kill("embedder")  # watched again: a dead stub is healed as before
    supervisor.check_once()
    assert server.calls == [("unload", "embedder"), ("load", "embedder")] and supervisor.restarts("embedder") == 1


def test_a_model_whose_stubs_were_not_up_at_the_first_look_is_watched_once_ready(tmp_path: Path) -> None:
    server = FakeServer({"feature_cache": 1, "ctr": 1})
    late = server.kill("ctr")
    supervisor = _supervisor(server, Clock(), tmp_path)
    assert supervisor.expected == {"feature_cache": 1}

    server.unavailable.add("ctr")  # still loading: not yet watched
    server.stubs.append(late)
    supervisor.check_once()
    assert supervisor.expected == {"feature_cache": 1}
    server.unavailable.discard("ctr")
    supervisor.check_once()
    assert supervisor.expected == {"feature_cache": 1, "ctr": 1}
    assert supervisor.registry.get_sample_value("larr_stub_restarts_total", {"model": "ctr"}) == 0
    assert server.calls == []


def test_extra_stubs_of_a_watched_model_change_nothing(tmp_path: Path) -> None:
    """An operator's load of a loaded model runs new instances beside the old until they take over."""
    server = FakeServer({"ctr": 1})
    supervisor = _supervisor(server, Clock(), tmp_path)
    old = list(server.stubs)
    server.operator("load", "ctr")  # two ctr stubs for a while
    supervisor.check_once()
    server.stubs = [stub for stub in server.stubs if stub not in old]  # the old instance is unloaded
    supervisor.check_once()
    assert supervisor.expected == {"ctr": 1} and server.calls == []


def test_an_unreadable_index_counts_a_short_model_as_a_dead_stub(tmp_path: Path) -> None:
    server = FakeServer({"ctr": 1})
    supervisor = _supervisor(server, Clock(), tmp_path)
    server.kill("ctr")
    server.index_fails = True
    supervisor.check_once()
    assert server.calls == [("unload", "ctr"), ("load", "ctr")] and supervisor.restarts("ctr") == 1


def test_poll_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="poll_s"):
        StubSupervisor(SERVER_PID, FakeServer({}), {}, poll_s=0)
