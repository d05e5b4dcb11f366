"""Heartbeat blast: what a few fast anonymous senders do to one server process's memory.

Starts ``python -m funpump.serve`` on a free port, opens 4 anonymous sockets that send 60 KB
``HEARTBEAT`` frames as fast as they can for 20 s (reading the replies), closes them, and prints
the server's resident memory (``VmRSS`` from ``/proc/<pid>/status``) before, at its peak during,
and after the blast, with how many frames the server answered. Numbers, not assertions.

    DJANGO_DEBUG=1 .venv/bin/python bench/blast.py [--seconds 20] [--sockets 4] [--unbounded]

``--unbounded`` turns the inbound caps off (``FUNPUMP_INBOUND_*``), as before they existed.
The server uses whatever ``DATABASE_URL`` / ``REDIS_URL`` are set (anonymous heartbeats do not
touch the database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
FRAME = json.dumps({"type": "HEARTBEAT", "data": {"pad": "x" * 60_000}})
UNBOUNDED = {
    "FUNPUMP_INBOUND_BYTES_PER_SECOND": "0",
    "FUNPUMP_INBOUND_QUEUE_FRAMES": str(10**9),
    "FUNPUMP_INBOUND_QUEUE_BYTES": str(10**15),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the server exited early")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit("the server did not listen within 30 s")


async def warm_up(url: str) -> None:
    """One ordinary exchange, so imports and the hub are counted in the baseline."""
    async with websockets.connect(url) as client:
        for _ in range(20):
            await client.send('{"type": "HEARTBEAT"}')
            await client.recv()


async def settled_rss(pid: int) -> float:
    """RSS once it stops moving (the speech recogniser may still be loading at startup)."""
    previous = rss_mb(pid)
    for _ in range(60):
        await asyncio.sleep(1)
        current = rss_mb(pid)
        if abs(current - previous) < 1:
            return current
        previous = current
    return previous


async def blaster(url: str, until: float, counts: dict[str, int]) -> None:
    async with websockets.connect(url, max_size=None, ping_interval=None) as client:

        async def read() -> None:
            async for _ in client:
                counts["answered"] += 1

        reader = asyncio.create_task(read())
        try:
            while time.monotonic() < until:
                await client.send(FRAME)
                counts["sent"] += 1
        finally:
            reader.cancel()
        closing = time.monotonic()
    # Leaving the block closed the socket: the server reads what was still in flight first.
    counts["closing_ms"] = max(counts["closing_ms"], int((time.monotonic() - closing) * 1000))


async def sample(pid: int, stop: asyncio.Event, peaks: list[float]) -> None:
    while not stop.is_set():
        peaks.append(rss_mb(pid))
        await asyncio.sleep(0.25)


def start_server(port: int, unbounded: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "funpump.settings"}
    env.setdefault("DJANGO_DEBUG", "1")
    if unbounded:
        env.update(UNBOUNDED)
    return subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, "-m", "funpump.serve", "-b", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def run(
    process: subprocess.Popen[bytes], port: int, seconds: float, sockets: int, unbounded: bool
) -> None:
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        await wait_listening(port, process)
        await warm_up(url)
        before = await settled_rss(process.pid)
        counts = {"sent": 0, "answered": 0, "closing_ms": 0}
        peaks: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(process.pid, stop, peaks))
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*(blaster(url, until, counts) for _ in range(sockets)))
        elapsed = until - started
        stop.set()
        await sampler
        await asyncio.sleep(2)
        after_2s = rss_mb(process.pid)
        await asyncio.sleep(8)
        after_10s = rss_mb(process.pid)
        await warm_up(url)  # the server still answers
    finally:
        process.terminate()
    mode = "inbound caps off" if unbounded else "inbound caps on"
    print(f"## Heartbeat blast ({mode}): {sockets} sockets, 60 KB frames, {elapsed:.1f} s")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| frames sent (written to the socket) | {counts['sent']} |")
    print(f"| frames answered while sending | {counts['answered']} |")
    print(f"| longest close after sending stopped | {counts['closing_ms'] / 1000:.1f} s |")
    print(f"| RSS before | {before:.1f} MB |")
    print(f"| RSS peak during | {max(peaks):.1f} MB |")
    print(f"| RSS 2 s after close | {after_2s:.1f} MB |")
    print(f"| RSS 10 s after close | {after_10s:.1f} MB |")
    print(f"| growth after close | {after_10s - before:+.1f} MB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--unbounded", action="store_true", help="turn the inbound caps off")
    args = parser.parse_args()
    port = free_port()
    process = start_server(port, args.unbounded)
    try:
        asyncio.run(run(process, port, args.seconds, args.sockets, args.unbounded))
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
