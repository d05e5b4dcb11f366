"""Rolling restart: two server processes on PostgreSQL and Redis behind a load balancer, clients
trading, one process sent SIGTERM (then the other).

What a client must see: every trade acknowledged exactly once or refused and absent from the
database, a 1012 close (never a dropped socket), and a reconnection to the other process that
carries on. What a proxy must see: readiness 503 from the start of the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import websockets
from channels.db import database_sync_to_async
from nacl.signing import SigningKey

from environments.models import Environment
from environments.services import environment_create
from gateway.client import FunPumpClient, wallet_of
from tests.e2e.conftest import Server, database_url
from tests.e2e.test_page import browser_page, off_loop, wait_for_text
from trading.models import Trade
from wallets.services import token_issue

__all__ = ["browser_page"]  # the fixture, shared with the page's tests

BUY = "10000000"  # 0.01 SOL: hundreds of trades fit in a starting balance
# Generous bounds for waits on a shared machine; the figures are printed, not asserted.
SETTLE = 30.0
SERVER_ENV = {"FUNPUMP_RATE_LIMIT": "100000/60", "FUNPUMP_DRAIN_SECONDS": "30"}


async def http_status(port: int, path: str) -> int | None:
    """GET ``path`` on a fresh connection: the status code, or None when nothing answers."""
    try:
        async with asyncio.timeout(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            status_line = await reader.readline()
            writer.close()
    except (OSError, TimeoutError):
        return None
    parts = status_line.split()
    return int(parts[1]) if len(parts) > 1 else None


class Balancer:
    """A TCP load balancer as a proxy in front of the processes would be: it polls each
    backend's readiness and sends each new connection to the next ready one."""

    def __init__(self, backends: list[Server]) -> None:
        self.backends = list(backends)
        self.ready: dict[int, bool] = {}
        self.routed: list[int] = []  # the backend port of every connection, in order
        self._turn = itertools.count()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.ws = f"ws://127.0.0.1:{self.port}/ws"
        self.poller = asyncio.create_task(self._poll())
        async with asyncio.timeout(SETTLE):
            while not all(self.ready.get(backend.port) for backend in self.backends):
                await asyncio.sleep(0.05)

    async def _poll(self) -> None:
        while True:
            for backend in list(self.backends):
                self.ready[backend.port] = (
                    await http_status(backend.port, "/api/health/ready") == 200
                )
            await asyncio.sleep(0.1)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ready = [backend for backend in self.backends if self.ready.get(backend.port)]
        turn = next(self._turn)
        for backend in ready[turn % len(ready) :] + ready[: turn % len(ready)] if ready else []:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(
                    "127.0.0.1", backend.port
                )
            except OSError:
                continue  # refused: try the next one, as proxy_next_upstream does
            self.routed.append(backend.port)
            for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
                task = asyncio.create_task(self._pipe(source, sink))
                self._pipes.add(task)
                task.add_done_callback(self._pipes.discard)
            return
        writer.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    async def stop(self) -> None:
        self.poller.cancel()
        self.server.close()
        for task in list(self._pipes):
            task.cancel()


@pytest.fixture
async def balancer() -> AsyncIterator[Callable[[list[Server]], Any]]:
    started: list[Balancer] = []

    async def start(backends: list[Server]) -> Balancer:
        balancer = Balancer(backends)
        await balancer.start()
        started.append(balancer)
        return balancer

    yield start
    for balancer in started:
        await balancer.stop()


async def start_servers(daphne_server: Callable[..., Server], count: int) -> list[Server]:
    return list(
        await asyncio.gather(
            *(asyncio.to_thread(daphne_server, **SERVER_ENV) for _ in range(count))
        )
    )


async def signed_in(url: str, key: SigningKey) -> FunPumpClient:
    token = await database_sync_to_async(token_issue)(wallet_of(key))
    client = FunPumpClient(url, token=token.token, reconnect_delay=0.5, reconnect_attempts=40)
    await client.connect()
    return client


async def rejoin(client: FunPumpClient, environment_id: str, wallet: str) -> None:
    """After a reconnection: join again (the socket may still be on its way back)."""
    async with asyncio.timeout(SETTLE):
        while True:
            try:
                reply = await client.join(environment_id, wallet)
            except (ConnectionError, websockets.ConnectionClosed, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            if reply["type"] == "ENVIRONMENT_STATE":
                return
            await asyncio.sleep(0.1)


def ledger(environment_id: str) -> list[tuple[str, int]]:
    return [
        (str(pk), sequence)
        for pk, sequence in Trade.objects.filter(environment_id=environment_id)
        .order_by("sequence")
        .values_list("pk", "sequence")
    ]


class RowLock:
    """Holds an environment's row lock from outside the servers, so a trade stays in flight."""

    def __init__(self, environment_id: str) -> None:
        self.connection = psycopg.connect(database_url())
        self.connection.execute(
            f"SELECT id FROM {Environment._meta.db_table} WHERE id = %s FOR UPDATE",  # noqa: S608
            [environment_id],
        )

    def waiters(self) -> int:
        with psycopg.connect(database_url(), autocommit=True) as probe:
            row = probe.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
        return int(row[0]) if row else 0

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()


@pytest.mark.timeout(240)
async def test_sigterm_answers_the_trade_in_flight_then_closes_with_1012(
    postgres, redis_url, daphne_server, balancer
):
    environment = await database_sync_to_async(environment_create)(name="Drain")
    first, second = await start_servers(daphne_server, 2)
    front = await balancer([first])  # Alice lands on the first process
    alice_key, bob_key = SigningKey.generate(), SigningKey.generate()
    alice = await signed_in(front.ws, alice_key)
    front.backends.append(second)
    bob = await signed_in(second.ws, bob_key)  # watches from the other process
    heard: list[int] = []
    bob.on("VIRTUAL_TRADE_EXECUTED", lambda message: heard.append(message["data"]["sequence"]))
    await alice.join(environment.id, wallet_of(alice_key))
    await bob.join(environment.id, wallet_of(bob_key))
    buy = {"environmentId": environment.id, "amount": BUY, "isBuy": True}

    lock = await asyncio.to_thread(RowLock, environment.id)
    try:
        in_flight = asyncio.create_task(alice.request("VIRTUAL_TRADE", buy, timeout=120))
        async with asyncio.timeout(SETTLE):  # the trade waits on the row lock, inside the server
            while await asyncio.to_thread(lock.waiters) < 1:
                await asyncio.sleep(0.05)
        sigterm_at = time.monotonic()
        first.process.send_signal(signal.SIGTERM)

        # The drain has begun: a proxy sees readiness fail, new sockets are refused with 503.
        async with asyncio.timeout(SETTLE):
            while await http_status(first.port, "/api/health/ready") != 503:
                await asyncio.sleep(0.05)
        assert await http_status(first.port, "/api/health") == 200  # alive, not ready
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(first.ws)
        assert refused.value.response.status_code == 503
        assert not in_flight.done()  # the drain waits for it
    finally:
        await asyncio.to_thread(lock.release)

    reply = await in_flight
    assert reply["type"] == "VIRTUAL_TRADE_EXECUTED", reply  # acknowledged before the close
    sequence = reply["data"]["sequence"]
    async with asyncio.timeout(SETTLE):  # its broadcast left the dying process
        while sequence not in heard:
            await asyncio.sleep(0.02)
        while alice.close_code is None:
            await asyncio.sleep(0.02)
    assert alice.close_code == 1012
    await asyncio.to_thread(first.process.wait, SETTLE)
    print(f"SIGTERM to exit with a trade in flight: {time.monotonic() - sigterm_at:.2f} s")

    # Alice's client comes back, through the balancer, on the other process and trades on.
    await rejoin(alice, environment.id, wallet_of(alice_key))
    assert front.routed[-1] == second.port
    again = await alice.request("VIRTUAL_TRADE", buy)
    assert again["type"] == "VIRTUAL_TRADE_EXECUTED", again
    trades = await database_sync_to_async(ledger)(environment.id)
    assert [trade_id for trade_id, _ in trades] == [
        reply["data"]["trade"]["id"],
        again["data"]["trade"]["id"],
    ]
    await alice.close()
    await bob.close()


@dataclass
class Trader:
    key: SigningKey
    client: FunPumpClient
    acknowledged: dict[str, str] = field(default_factory=dict)  # requestId → trade id
    refused: dict[str, str] = field(default_factory=dict)  # requestId → error code
    unanswered: int = 0  # the connection closed before an answer: must not have run
    closes: list[int | None] = field(default_factory=list)
    acknowledged_after_close: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds)

    @property
    def wallet(self) -> str:
        return wallet_of(self.key)


async def trade_until(trader: Trader, environment_id: str, stop: asyncio.Event) -> None:
    buy = {"environmentId": environment_id, "amount": BUY, "isBuy": True}
    client = trader.client
    while not stop.is_set():
        request_id = f"r{len(trader.acknowledged) + len(trader.refused) + trader.unanswered}"
        sent = time.perf_counter()
        try:
            reply = await client.request("VIRTUAL_TRADE", buy, timeout=60)
        except (ConnectionError, websockets.ConnectionClosed):
            trader.unanswered += 1
            async with asyncio.timeout(SETTLE):
                while client.close_code is None:
                    await asyncio.sleep(0.01)
            trader.closes.append(client.close_code)
            client.close_code = None
            await rejoin(client, environment_id, trader.wallet)
            continue
        request_id = reply.get("requestId", request_id)
        if reply["type"] == "VIRTUAL_TRADE_EXECUTED":
            assert request_id not in trader.acknowledged  # answered once
            trader.acknowledged[request_id] = reply["data"]["trade"]["id"]
            trader.latencies.append((sent, time.perf_counter() - sent))
            if trader.closes:
                trader.acknowledged_after_close += 1
        else:
            trader.refused[request_id] = reply["data"]["code"]
        if client.close_code is not None:  # closed between two requests
            trader.closes.append(client.close_code)
            client.close_code = None
            await rejoin(client, environment_id, trader.wallet)


async def watch_readiness(server: Server, stop: asyncio.Event) -> list[int | None]:
    seen: list[int | None] = []
    while not stop.is_set():
        seen.append(await http_status(server.port, "/api/health/ready"))
        await asyncio.sleep(0.02)
    return seen


async def terminate(server: Server) -> float:
    return await asyncio.to_thread(server.terminate, SETTLE)


@pytest.mark.timeout(300)
async def test_rolling_restart_under_load_accounts_for_every_trade(
    postgres, redis_url, daphne_server, balancer
):
    environment = await database_sync_to_async(environment_create)(name="Rolling")
    first, second = await start_servers(daphne_server, 2)
    front = await balancer([first, second])
    traders = []
    for _ in range(8):
        key = SigningKey.generate()
        trader = Trader(key, await signed_in(front.ws, key))
        await trader.client.join(environment.id, trader.wallet)
        traders.append(trader)
    stop = asyncio.Event()
    trading = [asyncio.create_task(trade_until(t, environment.id, stop)) for t in traders]
    figures: dict[str, Any] = {}

    await asyncio.sleep(2)
    restart_began = time.perf_counter()
    # Restart the first process: drain it, start its replacement, then the same for the second.
    watching = asyncio.Event()
    readiness = asyncio.create_task(watch_readiness(first, watching))
    health_of_second = asyncio.create_task(watch_health(second, watching))
    figures["first: SIGTERM to exit (s)"] = round(await terminate(first), 2)
    watching.set()
    first_readiness, second_health = await readiness, await health_of_second
    await asyncio.sleep(1)
    (replacement,) = await start_servers(daphne_server, 1)
    front.backends.append(replacement)
    async with asyncio.timeout(SETTLE):
        while not front.ready.get(replacement.port):
            await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    figures["second: SIGTERM to exit (s)"] = round(await terminate(second), 2)
    await asyncio.sleep(2)
    stop.set()
    await asyncio.gather(*trading)

    trades = await database_sync_to_async(ledger)(environment.id)
    acknowledged = [trade_id for t in traders for trade_id in t.acknowledged.values()]
    figures.update(
        acknowledged=len(acknowledged),
        refused=sum(len(t.refused) for t in traders),
        unanswered=sum(t.unanswered for t in traders),
        closes=sorted({code for t in traders for code in t.closes}, key=str),
        database=len(trades),
        first_readiness=[k for k, _ in itertools.groupby(first_readiness)],
    )
    figures["health of the other process: polls, slowest (s)"] = [
        len(second_health),
        round(max(elapsed for _, elapsed in second_health), 3),
    ]
    for label, during in (("before the restarts", False), ("during and after", True)):
        latencies = sorted(
            latency
            for t in traders
            for sent, latency in t.latencies
            if (sent >= restart_began) == during
        )
        if latencies:
            figures[f"ack p50/p99/max ms {label}"] = [
                round(latencies[int(q * (len(latencies) - 1))] * 1000, 1) for q in (0.5, 0.99, 1)
            ]
    figures["sequence gap warnings"] = sum(
        server.log.read_text(errors="replace").count("sequence gap")
        for server in (first, second, replacement)
    )
    for log in (first, second):
        figures[f"drain log {log.port}"] = [
            line.split("kernel.lifecycle ")[-1]
            for line in log.log.read_text(errors="replace").splitlines()
            if "kernel.lifecycle" in line
        ]
    print(figures)

    # Every trade is accounted for: the database holds exactly the acknowledged ones.
    assert len(acknowledged) == len(set(acknowledged))
    assert sorted(acknowledged, key=int) == [trade_id for trade_id, _ in trades]
    assert [sequence for _, sequence in trades] == list(range(1, len(trades) + 1))
    # Every client was closed with 1012 (never dropped) and carried on after it.
    for trader in traders:
        assert trader.closes, "every client sat on a restarted process at some point"
        assert set(trader.closes) == {1012}, trader.closes
        assert trader.acknowledged_after_close > 0
    # The draining process told the proxy at once and never took it back.
    statuses = [status for status in first_readiness if status is not None]
    assert 503 not in statuses or 200 not in statuses[statuses.index(503) :]
    assert {status for status, _ in second_health} == {200}, second_health
    for trader in traders:
        await trader.client.close()
    with contextlib.suppress(Exception):
        await terminate(replacement)


async def watch_health(server: Server, stop: asyncio.Event) -> list[tuple[int | None, float]]:
    seen: list[tuple[int | None, float]] = []
    while not stop.is_set():
        started = time.perf_counter()
        seen.append((await http_status(server.port, "/api/health"), time.perf_counter() - started))
        await asyncio.sleep(0.05)
    return seen


class BalancerThread:
    """The balancer on its own event loop, for a test whose thread drives a browser."""

    def __init__(self, backends: list[Server]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.balancer = Balancer(backends)
        asyncio.run_coroutine_threadsafe(self.balancer.start(), self.loop).result(SETTLE)
        self.http = f"http://127.0.0.1:{self.balancer.port}"

    def add(self, backend: Server) -> None:
        self.loop.call_soon_threadsafe(self.balancer.backends.append, backend)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.balancer.stop(), self.loop).result(SETTLE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(SETTLE)


@pytest.mark.timeout(240)
def test_the_page_reconnects_to_the_other_process_and_trades_on(
    postgres, redis_url, daphne_server, browser_page
):
    off_loop(environment_create, name="Restart room", environment_id="restart-room")
    first = off_loop(daphne_server, **SERVER_ENV)
    second = off_loop(daphne_server, **SERVER_ENV)
    front = BalancerThread([first])  # the page lands on the first process
    try:
        page = browser_page
        page.goto(front.http + "/")
        page.wait_for_selector("#environment option[value='restart-room']", state="attached")
        page.select_option("#environment", "restart-room")
        page.click("#sign-in")
        page.wait_for_selector("#join:not([disabled])")
        page.click("#join")
        wait_for_text(page, "#balance-sol", "100")
        page.fill("#amount", "1")
        page.click("button[value='buy']")
        wait_for_text(page, "#balance-sol", "99")
        front.add(second)

        first.terminate()  # SIGTERM: the page's socket closes with 1012 and comes back
        deadline = time.monotonic() + SETTLE
        while second.port not in front.balancer.routed:  # the page's new socket
            assert time.monotonic() < deadline, "the page did not reconnect"
            time.sleep(0.05)
        wait_for_text(page, "#status", "joined Restart room")  # joined again on the new socket
        page.fill("#amount", "1")
        page.click("button[value='buy']")
        wait_for_text(page, "#balance-sol", "98")
        assert len(page.query_selector_all("#trades li")) == 2
    finally:
        front.stop()
