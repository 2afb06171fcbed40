"""Free loopback ports for servers that tests and benchmarks start side by side (``run_triton_server``, redis-server).

A port is free when picked; another process may still take it before the server binds it, so each pick keeps
out of the range where that is likely (:func:`free_port`).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Ports picked below the kernel's ephemeral range start here (above the well-known and most registered services).
LOWEST_PICKED_PORT = 10_000


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` right now (another process may still take it before we do).

    Picked below the kernel's ephemeral range when there is room: a port from ``bind(0)`` lies inside that range,
    where every outgoing connection on the machine (a client, a pip download) may take it as its source port in
    the seconds before our server binds it. Below the range only a process binding that very port can.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ephemeral_low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(64 if ephemeral_low > LOWEST_PICKED_PORT else 0):
        port = rng.randrange(LOWEST_PICKED_PORT, ephemeral_low)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:  # taken: try another
                continue
            return port
    with socket.socket(family, socket.SOCK_STREAM) as sock:  # no room below the range: let the kernel pick
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct :func:`free_port` ports (a server needs each of its ports to differ)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return ports


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (Linux's default, 32768, when it cannot be read)."""
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
