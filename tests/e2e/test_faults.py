"""Faults: Redis goes away under two server processes and comes back.

The tests run their own redis-server on a free port, so stopping it disturbs nothing else.
The outage under load prints its figures (acknowledgement latency before, during and after,
delivery delay across processes, recovery time, warnings logged); docs/operations.md keeps
them. Timings are printed, never asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from channels.db import database_sync_to_async
from nacl.signing import SigningKey

import protocol
from environments.models import Environment
from environments.selectors import chat_view
from environments.services import chat_post, environment_create
from gateway.client import FunPumpClient, wallet_of
from kernel import realtime
from tests.conftest import require
from tests.e2e.conftest import free_port
from trading.models import Trade
from wallets.services import token_issue

pytestmark = pytest.mark.asyncio


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"],
                capture_output=True,
                text=True,
                check=False,
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    require(bool(shutil.which("redis-server")), "needs redis-server (Debian package redis-server)")
    redis = PrivateRedis()
    redis.start()
    yield redis
    redis.stop()


async def client_for(server, key: SigningKey) -> FunPumpClient:
    token = await database_sync_to_async(token_issue)(wallet_of(key))
    client = FunPumpClient(server.ws, token=token.token, origin=server.http)
    await client.connect()
    return client


@pytest.mark.timeout(120)
async def test_a_redis_outage_loses_no_trade_and_broadcasts_resume(private_redis, daphne_server):
    environment = await database_sync_to_async(environment_create)(name="Outage")
    redis_env = {"REDIS_URL": private_redis.url, "FUNPUMP_REDIS_PREFIX": "outage"}
    first, second = await asyncio.gather(
        database_sync_to_async(daphne_server)(**redis_env),
        database_sync_to_async(daphne_server)(**redis_env),
    )
    alice_key, bob_key = SigningKey.generate(), SigningKey.generate()
    alice, bob = await client_for(first, alice_key), await client_for(second, bob_key)
    heard: list[int] = []
    bob.on("VIRTUAL_TRADE_EXECUTED", lambda message: heard.append(message["data"]["sequence"]))
    await alice.join(environment.id, wallet_of(alice_key))
    await bob.join(environment.id, wallet_of(bob_key))
    buy = {"environmentId": environment.id, "amount": "100000000", "isBuy": True}
    executed = 0

    async def trade() -> int:
        nonlocal executed
        reply = await alice.request("VIRTUAL_TRADE", buy)
        assert reply["type"] == "VIRTUAL_TRADE_EXECUTED", reply
        executed += 1
        return int(reply["data"]["sequence"])

    sequence = await trade()
    async with asyncio.timeout(5):
        while sequence not in heard:
            await asyncio.sleep(0.02)

    await asyncio.to_thread(private_redis.stop)
    # Redis is gone: the socket keeps answering and trades still execute on their process.
    assert (await alice.request("HEARTBEAT"))["type"] == "HEARTBEAT"
    for _ in range(3):
        await trade()
    state = await bob.join(environment.id, wallet_of(bob_key))  # resynchronise from the database
    assert state["type"] == "ENVIRONMENT_STATE"
    assert state["data"]["sequence"] == executed

    await asyncio.to_thread(private_redis.start)
    outage_over = time.monotonic()
    async with asyncio.timeout(20):
        while True:
            sequence = await trade()
            await asyncio.sleep(0.2)
            if sequence in heard:
                break
    recovered_after = time.monotonic() - outage_over
    print(f"cross-process broadcasts resumed {recovered_after:.1f} s after Redis returned")

    def ledger() -> list[int]:
        return sorted(
            Trade.objects.filter(environment_id=environment.id).values_list("sequence", flat=True)
        )

    assert await database_sync_to_async(ledger)() == list(range(1, executed + 1))
    await alice.close()
    await bob.close()


async def test_an_event_whose_broadcast_was_lost_still_reaches_the_clients(
    redis_url, daphne_server, monkeypatch
):
    """A process that commits and dies before broadcasting: the others read the event back."""
    environment = await database_sync_to_async(environment_create)(name="Lost broadcast")
    server = await database_sync_to_async(daphne_server)(
        REDIS_URL=redis_url, FUNPUMP_REDIS_PREFIX=f"lost-{uuid.uuid4().hex}"
    )
    key = SigningKey.generate()
    client = await client_for(server, key)
    heard: list[dict[str, Any]] = []
    client.on("CHAT_MESSAGE", heard.append)
    await client.join(environment.id, wallet_of(key))

    # This test process plays the lost one: it commits a chat line and never announces it.
    monkeypatch.setattr(realtime.publish, "_dispatch", lambda event: None)
    posted = await database_sync_to_async(chat_post)(
        environment_id=environment.id, wallet=wallet_of(key), message="from a lost process"
    )
    async with asyncio.timeout(10):  # the hub checks the latest sequences every 2 s
        while not heard:
            await asyncio.sleep(0.05)
    assert heard[0]["data"] == protocol.dump(await database_sync_to_async(chat_view)(posted.line))
    reply = await client.request(
        "CHAT_MESSAGE", {"environmentId": environment.id, "message": "and then mine"}
    )
    assert reply["type"] == "CHAT_MESSAGE"
    assert [message["data"]["sequence"] for message in heard] == [1, 2]
    await client.close()


# --- twenty traders through a 12 s outage ---------------------------------------------------

TRADERS = 20
WARMUP, BEFORE, OUTAGE, AFTER = 2.0, 5.0, 12.0, 6.0  # seconds of trading in each phase
# Seconds a trader waits between two trades (0.5: about 40 trades/s in all, below what one
# environment's row lock lets through on a small machine; lower it to measure saturation).
PACE = float(os.environ.get("FUNPUMP_OUTAGE_PACE", "0.5"))


class Trader:
    """One client: trades in a loop and records every event it is sent, with the time."""

    def __init__(self, name: str, server: int, client: FunPumpClient, wallet: str) -> None:
        self.name = name
        self.server = server
        self.client = client
        self.wallet = wallet
        self.seen: list[int] = []
        self.seen_at: dict[int, float] = {}
        self.start = 0  # the sequence of its ENVIRONMENT_STATE
        self.acks: list[tuple[float, float, int]] = []  # (sent at, latency, sequence)
        self.failures: list[dict[str, Any]] = []
        client.on("VIRTUAL_TRADE_EXECUTED", self._heard)

    def _heard(self, message: dict[str, Any]) -> None:
        sequence = int(message["data"]["sequence"])
        self.seen.append(sequence)
        self.seen_at.setdefault(sequence, time.monotonic())

    async def join(self, environment_id: str) -> dict[str, Any]:
        state = await self.client.join(environment_id, self.wallet)
        assert state["type"] == "ENVIRONMENT_STATE", state
        self.start = int(state["data"]["sequence"])
        self.seen = [n for n in self.seen if n > self.start]  # events its state already had
        return state

    async def trade(self, environment_id: str, stop: asyncio.Event) -> None:
        tokens = 0
        while not stop.is_set():
            buy = tokens == 0
            data = {
                "environmentId": environment_id,
                "amount": "10000000" if buy else str(tokens),
                "isBuy": buy,
            }
            sent = time.monotonic()
            reply = await self.client.request("VIRTUAL_TRADE", data)
            latency = time.monotonic() - sent
            if reply["type"] != "VIRTUAL_TRADE_EXECUTED":
                self.failures.append(reply)
                await asyncio.sleep(PACE)
                continue
            tokens = int(reply["data"]["trade"]["tokenAmount"]) if buy else 0
            self.acks.append((sent, latency, int(reply["data"]["sequence"])))
            await asyncio.sleep(PACE)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def log_lines(server: Any, marker: str) -> list[str]:
    return [line for line in server.log.read_text(errors="replace").splitlines() if marker in line]


@pytest.mark.timeout(240)
async def test_twenty_traders_see_every_event_once_in_order_through_a_redis_outage(
    private_redis, daphne_server
):
    environment = await database_sync_to_async(environment_create)(name="Outage under load")
    server_env = {
        "REDIS_URL": private_redis.url,
        "FUNPUMP_REDIS_PREFIX": "outage-load",
        "FUNPUMP_RATE_LIMIT": "100000/60",
        "FUNPUMP_VOICE_PRELOAD": "0",  # no speech model built meanwhile
    }
    servers = await asyncio.gather(
        database_sync_to_async(daphne_server)(**server_env),
        database_sync_to_async(daphne_server)(**server_env),
    )

    async def connect(index: int, server: int) -> Trader:
        key = SigningKey.generate()
        client = await client_for(servers[server], key)
        trader = Trader(f"t{index}", server, client, wallet_of(key))
        await trader.join(environment.id)
        return trader

    traders = list(await asyncio.gather(*(connect(index, index % 2) for index in range(TRADERS))))
    stop = asyncio.Event()
    loops = [asyncio.create_task(trader.trade(environment.id, stop)) for trader in traders]

    await asyncio.sleep(WARMUP)  # first connections to the database, caches: not measured
    measured_from = time.monotonic()
    await asyncio.sleep(BEFORE)
    await asyncio.to_thread(private_redis.stop)
    outage_began = time.monotonic()
    await asyncio.sleep(OUTAGE / 2)
    # Joining still works while Redis is down (presence counts this process's connections).
    latecomer = await connect(TRADERS, 1)
    await asyncio.sleep(OUTAGE / 2)
    await asyncio.to_thread(private_redis.start)
    outage_ended, returned_at = time.monotonic(), datetime.now()
    await asyncio.sleep(AFTER)
    stop.set()
    await asyncio.gather(*loops)

    def final_sequence() -> int:
        return Environment.objects.get(pk=environment.id).sequence

    final = await database_sync_to_async(final_sequence)()
    watchers = [*traders, latecomer]
    try:
        async with asyncio.timeout(15):
            while any(final not in watcher.seen_at for watcher in watchers):
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass  # the assertions below say who is missing what

    report_outage(servers, traders, (measured_from, outage_began, outage_ended), returned_at)
    # Every client saw every event after its state exactly once, in order.
    for watcher in watchers:
        assert watcher.seen == list(range(watcher.start + 1, final + 1)), (
            f"{watcher.name} on server {watcher.server}: "
            f"{sorted(set(range(watcher.start + 1, final + 1)) - set(watcher.seen))[:20]} missing"
        )
    # The books: every acknowledged trade is in the ledger once, and nothing else is.
    acked = sorted(sequence for trader in traders for _, _, sequence in trader.acks)
    assert not [failure for trader in traders for failure in trader.failures]

    def ledger() -> list[int]:
        return sorted(
            Trade.objects.filter(environment_id=environment.id).values_list("sequence", flat=True)
        )

    assert await database_sync_to_async(ledger)() == acked == list(range(1, final + 1))
    # One warning per process for the whole outage, and no traceback.
    for server in servers:
        assert len(log_lines(server, "Redis unavailable")) == 1, server.output()
        assert not log_lines(server, "Traceback"), server.output()

    for watcher in watchers:
        await watcher.client.close()


def report_outage(
    servers: list[Any],
    traders: list[Trader],
    marks: tuple[float, float, float],
    returned_at: datetime,
) -> None:
    """Print the figures (docs/operations.md, "Redis outage")."""
    measured_from, outage_began, outage_ended = marks
    phases = {
        "before": (measured_from, outage_began),
        "during": (outage_began, outage_ended),
        "after": (outage_ended, float("inf")),
    }
    print()
    for phase, (start, end) in phases.items():
        latencies = [lat for t in traders for sent, lat, _ in t.acks if start <= sent < end]
        span = min(end, max(sent for t in traders for sent, _, _ in t.acks)) - max(
            start, min(sent for t in traders for sent, _, _ in t.acks)
        )
        print(
            f"{phase:>6}: {len(latencies):5d} trades, {len(latencies) / span:6.1f}/s, "
            f"ack p50 {percentile(latencies, 0.5) * 1000:6.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:6.1f} ms, "
            f"max {max(latencies, default=0) * 1000:6.1f} ms"
        )
    # Delivery to the other process: from the trader's acknowledgement to the first client of
    # the other server that received the event.
    delays: list[tuple[float, float]] = []  # (acknowledged at, delay)
    for trader in traders:
        others = [t for t in traders if t.server != trader.server]
        for sent, latency, sequence in trader.acks:
            acked_at = sent + latency
            heard = [t.seen_at[sequence] for t in others if sequence in t.seen_at]
            if heard:
                delays.append((acked_at, min(heard) - acked_at))
    for phase, (start, end) in phases.items():
        values = [delay for at, delay in delays if start <= at < end]
        print(
            f"{phase:>6}: cross-process delivery p50 {percentile(values, 0.5) * 1000:6.1f} ms, "
            f"p99 {percentile(values, 0.99) * 1000:6.1f} ms"
        )
    # Around the restart, half a second at a time: when delivery is back to its usual delay.
    timeline = []
    for step in range(-2, 8):
        start = outage_ended + step * 0.5
        values = [delay for at, delay in delays if start <= at < start + 0.5]
        timeline.append(f"{step * 0.5:+.1f}s:{percentile(values, 0.5) * 1000:.0f}ms")
    print("cross-process delivery p50 around the restart:", " ".join(timeline))
    for index, server in enumerate(servers):
        warnings = log_lines(server, " WARNING ")
        print(f"server {index}: {len(warnings)} warning(s): {[w[24:160] for w in warnings]}")
        for line in log_lines(server, "channel layer back"):
            back = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            print(
                f"server {index}: layer rejoined {(back - returned_at).total_seconds():.2f} s "
                "after Redis returned"
            )
