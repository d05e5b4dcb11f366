"""Real daphne processes on free ports, sharing the test database (and Redis, when set)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def database_url() -> str:
    """The URL of the test database this session created, for the server processes."""
    config = connection.settings_dict
    if connection.vendor == "postgresql":
        user = config.get("USER") or "postgres"
        password = f":{config['PASSWORD']}" if config.get("PASSWORD") else ""
        host = config.get("HOST") or "127.0.0.1"
        port = config.get("PORT") or 5432
        return f"postgres://{user}{password}@{host}:{port}/{config['NAME']}"
    return f"sqlite:///{config['NAME']}"


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/ws"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def terminate(self, timeout: float = 30) -> float:
        """Send SIGTERM (a graceful shutdown) and wait for the exit; return the seconds taken."""
        started = time.monotonic()
        self.process.terminate()
        self.process.wait(timeout=timeout)
        return time.monotonic() - started


@pytest.fixture
def daphne_server(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ``python -m funpump.serve`` (daphne); every server started is stopped afterwards."""
    servers: list[Server] = []

    def start(endpoint: str | None = None, **extra_env: str) -> Server:
        """``endpoint``: a twisted endpoint string (``ssl:...``) instead of plain TCP."""
        port = free_port()
        log = tmp_path / f"daphne-{port}.log"
        env = {
            **os.environ,
            "DJANGO_DEBUG": "1",
            "DJANGO_SETTINGS_MODULE": "funpump.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "FUNPUMP_REDIS_PREFIX": settings.FUNPUMP_REDIS_PREFIX,
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            # Most servers here hear no speech: the model loads with a first voice session.
            "FUNPUMP_VOICE_PRELOAD": "0",
            # As in the test's own process: PARTICIPANTS frames only where the test asks for them.
            "FUNPUMP_PARTICIPANTS_EVERY": str(settings.FUNPUMP_PARTICIPANTS_EVERY),
            **extra_env,
        }
        command = [sys.executable, "-m", "funpump.serve", "-b", "127.0.0.1", "-p", str(port)]
        if endpoint is not None:
            command[3:] = ["-e", endpoint.format(port=port)]
        with log.open("wb") as sink:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
        server = Server(process, port, log)
        servers.append(server)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"daphne exited early:\n{server.output()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return server
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"daphne did not listen within 30 s:\n{server.output()}")

    yield start
    for server in servers:
        server.process.terminate()
    for server in servers:
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
