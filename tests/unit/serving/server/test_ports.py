"""Unit tests of larr.serving.server.ports: free ports picked below the kernel's ephemeral range."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from larr.serving.server import ports as ports_module


def test_free_port_picks_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Outgoing connections take source ports from the ephemeral range; a server port chosen there can be taken
    between the pick and the server's bind. Below the range only a deliberate bind can take it."""
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("40000\t60999\n")
    monkeypatch.setattr(ports_module, "EPHEMERAL_RANGE_FILE", ranges)
    ports = ports_module.free_ports(8)
    assert len(set(ports)) == 8
    assert all(ports_module.LOWEST_PICKED_PORT <= port < 40000 for port in ports)
    for port in ports:  # each is bindable right now
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_free_port_skips_a_taken_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With room for just two ports below the range and one of them listening, the other is the answer."""
    ranges = tmp_path / "ip_local_port_range"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(ports_module, "LOWEST_PICKED_PORT", port)
        ranges.write_text(f"{port + 2} 60999\n")
        monkeypatch.setattr(ports_module, "EPHEMERAL_RANGE_FILE", ranges)
        assert {ports_module.free_port() for _ in range(10)} == {port + 1}


def test_free_port_without_room_below_the_range_lets_the_kernel_pick(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("1024 65000\n")
    monkeypatch.setattr(ports_module, "EPHEMERAL_RANGE_FILE", ranges)
    port = ports_module.free_port()
    assert 1024 <= port <= 65000
