"""Room benchmark: one real daphne process, real sockets, numbers instead of assertions.

Runs four bounded scenarios against ``/ws`` on 127.0.0.1 and prints a Markdown table (also
written to ``.bench/room.md``):

1. heartbeat: one anonymous client, 3,000 sequential ``HEARTBEAT`` round trips;
2. broadcast fan-out: 200 signed-in listeners in one environment, one trader doing 100 buys;
3. concurrent trading: 20 traders doing 50 random buys/sells each, all at once;
4. price fan-out: 1,000 anonymous ``SUBSCRIBE_PRICE`` subscribers of one environment, one
   trader buying at 50 trades/s for 10 s; how fast every subscriber sees the final price.

Server CPU comes from ``/proc/<daphne pid>/stat`` (all threads), latencies from the client's
``time.perf_counter()``. The client runs on the same machine, so it competes for the same cores.
Uses whatever ``DATABASE_URL`` / ``REDIS_URL`` are set (SQLite and the in-memory layer by
default); the database must be migrated. Wallet tokens are issued directly, no HTTP sign-in.

    DJANGO_DEBUG=1 .venv/bin/python bench/room.py
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import itertools
import json
import math
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import base58
import websockets
from nacl.signing import SigningKey

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "funpump.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402

from environments.services import environment_create  # noqa: E402
from trading.state import CurveConstants  # noqa: E402
from wallets.services import token_issue  # noqa: E402

OUT_DIR = ROOT / ".bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

HEARTBEATS = 3000
HEARTBEAT_WARMUP = 100
LISTENERS = 200
FANOUT_TRADES = 100
FANOUT_AMOUNT = "100000000"  # 0.1 SOL per buy
TRADERS = 20
TRADES_EACH = 50
CONNECT_CONCURRENCY = 50
BIG_BALANCE = 10**15  # lamports: nobody runs out
SUBSCRIBERS = 1000
SUBSCRIBE_CHUNK = 100  # connections opened (and subscribed) in parallel
PRICE_RATE = 50  # trades per second
PRICE_SECONDS = 10
PRICE_TRADES = PRICE_RATE * PRICE_SECONDS
PRICE_AMOUNT = "100000000"  # 0.1 SOL per buy: 50 SOL in all, short of completing the curve
FINAL_WAIT = 3.0  # seconds after the last trade's reply to wait for the final price
FINAL_FAST = 0.2  # "saw the final price promptly" threshold, seconds

Row = tuple[str, str, str]


# --- helpers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the command name: field 3 (state) is index 0, so utime (14) and stime (15) are 11, 12.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def new_wallet() -> str:
    return base58.b58encode(bytes(SigningKey.generate().verify_key)).decode()


def redact(url: str) -> str:
    """A URL without its password."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def database_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    return f"sqlite:///{connection.settings_dict['NAME']}"


def describe_database() -> str:
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite ({Path(str(config['NAME'])).name})"
    host = config.get("HOST") or "localhost"
    return f"{connection.vendor} ({host}:{config.get('PORT') or ''}/{config['NAME']})"


def describe_layer() -> str:
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
    if settings.REDIS_URL:
        return f"{backend} ({redact(settings.REDIS_URL)}, prefix {settings.FUNPUMP_REDIS_PREFIX})"
    return backend


def check_migrated() -> None:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        sys.exit(
            f"{len(plan)} unapplied migrations on {describe_database()}: "
            "run `.venv/bin/python manage.py migrate` (or `make migrate`) first"
        )


# --- the server -------------------------------------------------------------------------------


class Daphne:
    """One daphne subprocess on a free port; its output goes to ``.bench/daphne.log``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.log = OUT_DIR / "daphne.log"
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        env = {
            **os.environ,
            # Production mode: debug mode records every SQL query and would inflate the CPU.
            "DJANGO_DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "funpump.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "FUNPUMP_REDIS_PREFIX": settings.FUNPUMP_REDIS_PREFIX,
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "FUNPUMP_RATE_LIMIT": "1000000/60",
        }
        command = [sys.executable, "-m", "funpump.serve", "-b", "127.0.0.1", "-p", str(self.port)]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
                command, cwd=ROOT, env=env, stdout=sink, stderr=sink
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited early:\n{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not listen within 30 s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def tail(self, size: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""

    def problems(self) -> tuple[Counter[str], list[str]]:
        """Counts of WARNING/ERROR/CRITICAL/Traceback lines in the log, and the first few."""
        counts: Counter[str] = Counter()
        samples: list[str] = []
        if not self.log.exists():
            return counts, samples
        for line in self.log.read_text(errors="replace").splitlines():
            for level in ("WARNING", "ERROR", "CRITICAL", "Traceback"):
                if level in line:
                    counts[level] += 1
                    if len(samples) < 8:
                        samples.append(line[:300])
                    break
        return counts, samples

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    async def settle(self, quiet: float = 0.3, limit: float = 10.0) -> None:
        """Wait until the server stops burning CPU (leftovers of the previous phase)."""
        deadline = time.monotonic() + limit
        before = self.cpu()
        while time.monotonic() < deadline:
            await asyncio.sleep(quiet)
            now = self.cpu()
            if now - before < 0.02:
                return
            before = now


# --- the client -------------------------------------------------------------------------------


class Conn:
    """A raw websocket with one reader task: replies by requestId, trade broadcasts by sequence."""

    def __init__(self, socket_: Any) -> None:
        self.ws = socket_
        self.ids = itertools.count(1)
        self.waiters: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self.trade_frames = 0  # VIRTUAL_TRADE_EXECUTED broadcasts (not replies)
        self.trade_seen: dict[int, float] = {}  # sequence -> first receipt (perf_counter)
        self.duplicates = 0
        self.others: Counter[str] = Counter()  # other unsolicited frame types
        self.close_code: int | None = None
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, token: str | None = None) -> Conn:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        ws = await websockets.connect(
            url, additional_headers=headers, max_size=2**22, open_timeout=30
        )
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                received = time.perf_counter()
                message = json.loads(raw)
                request_id = message.get("requestId")
                if request_id is not None:
                    waiter = self.waiters.pop(request_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result((received, message))
                    continue
                if message.get("type") == "VIRTUAL_TRADE_EXECUTED":
                    self.trade_frames += 1
                    sequence = int(message["data"]["sequence"])
                    if sequence in self.trade_seen:
                        self.duplicates += 1
                    else:
                        self.trade_seen[sequence] = received
                else:
                    self.others[str(message.get("type"))] += 1
        except websockets.ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else None
        finally:
            for waiter in self.waiters.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError(f"closed ({self.close_code})"))

    async def request(
        self, message_type: str, data: Any = None, timeout: float = 60.0
    ) -> tuple[float, float, dict[str, Any]]:
        """Send with a fresh requestId; return (sent, received, reply)."""
        request_id = f"r{next(self.ids)}"
        waiter: asyncio.Future[tuple[float, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        self.waiters[request_id] = waiter
        frame: dict[str, Any] = {"type": message_type, "requestId": request_id}
        if data is not None:
            frame["data"] = data
        sent = time.perf_counter()
        await self.ws.send(json.dumps(frame))
        received, reply = await asyncio.wait_for(waiter, timeout)
        return sent, received, reply

    async def join(self, environment_id: str, wallet: str) -> dict[str, Any]:
        _, _, reply = await self.request(
            "JOIN_ENVIRONMENT", {"environmentId": environment_id, "userId": wallet}
        )
        if reply["type"] != "ENVIRONMENT_STATE":
            raise RuntimeError(f"join refused: {reply}")
        return reply

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


async def bounded(coroutines: Iterable[Any], limit: int = CONNECT_CONCURRENCY) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(coroutine: Any) -> Any:
        async with gate:
            return await coroutine

    return await asyncio.gather(*(run(coroutine) for coroutine in coroutines))


async def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


class PriceSub:
    """A raw anonymous websocket with one price subscription; records every PRICE_UPDATE."""

    def __init__(self, socket_: Any, snapshot: dict[str, Any]) -> None:
        self.ws = socket_
        self.snapshot = snapshot
        self.updates: list[tuple[float, str]] = []  # (perf_counter at receipt, price)
        self.others: Counter[str] = Counter()
        self.close_code: int | None = None
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, mint: str, environment_id: str) -> PriceSub:
        ws = await websockets.connect(url, max_size=2**22, open_timeout=30)
        try:
            await ws.send(
                json.dumps(
                    {
                        "type": "SUBSCRIBE_PRICE",
                        "requestId": "s",
                        "data": {"mintAddress": mint, "environmentId": environment_id},
                    }
                )
            )
            reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if reply.get("type") != "PRICE_UPDATE" or reply.get("requestId") != "s":
                raise RuntimeError(f"unexpected subscription reply: {reply}")
        except BaseException:
            await ws.close()
            raise
        return cls(ws, reply["data"])

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                received = time.perf_counter()
                message = json.loads(raw)
                if message.get("type") == "PRICE_UPDATE":
                    self.updates.append((received, message["data"]["price"]))
                else:
                    self.others[str(message.get("type"))] += 1
        except websockets.ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else None

    def first_seen(self, price: str) -> float | None:
        """When the first PRICE_UPDATE carrying ``price`` arrived."""
        for received, seen in self.updates:
            if seen == price:
                return received
        return None

    def busiest_second(self) -> int:
        """The most updates received within any 1 s."""
        times = [received for received, _ in self.updates]
        best, left = 0, 0
        for right, now in enumerate(times):
            while now - times[left] > 1.0:
                left += 1
            best = max(best, right - left + 1)
        return best

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


async def in_chunks(coroutines: Iterable[Any], size: int) -> list[Any]:
    """Run the coroutines ``size`` at a time, chunk after chunk; results in order."""
    pending, results = list(coroutines), []
    for start in range(0, len(pending), size):
        results += await asyncio.gather(*pending[start : start + size])
    return results


# --- scenarios --------------------------------------------------------------------------------


async def heartbeat(server: Daphne) -> list[Row]:
    name = "heartbeat"
    async with websockets.connect(server.url, max_size=2**20) as ws:

        async def ping(request_id: str) -> None:
            await ws.send(json.dumps({"type": "HEARTBEAT", "requestId": request_id}))
            reply = json.loads(await ws.recv())
            if reply.get("type") != "HEARTBEAT" or reply.get("requestId") != request_id:
                raise RuntimeError(f"unexpected heartbeat reply: {reply}")

        for index in range(HEARTBEAT_WARMUP):
            await ping(f"w{index}")
        await server.settle()
        latencies = []
        cpu0, start = server.cpu(), time.perf_counter()
        for index in range(HEARTBEATS):
            sent = time.perf_counter()
            await ping(f"h{index}")
            latencies.append(time.perf_counter() - sent)
        wall, cpu = time.perf_counter() - start, server.cpu() - cpu0
    return [
        (name, "messages", str(HEARTBEATS)),
        (name, "server CPU µs/message", f"{cpu / HEARTBEATS * 1e6:.0f}"),
        (name, "round trip p50 ms", ms(percentile(latencies, 50))),
        (name, "round trip p99 ms", ms(percentile(latencies, 99))),
        (name, "messages/s", f"{HEARTBEATS / wall:.0f}"),
    ]


async def fanout(server: Daphne, environment_id: str, tokens: dict[str, str]) -> list[Row]:
    name = "fan-out"
    wallets = list(tokens)
    listener_wallets, trader_wallet = wallets[:LISTENERS], wallets[LISTENERS]
    started = time.perf_counter()
    listeners: list[Conn] = await bounded(
        Conn.open(server.url, tokens[wallet]) for wallet in listener_wallets
    )
    await bounded(
        listener.join(environment_id, wallet)
        for listener, wallet in zip(listeners, listener_wallets, strict=True)
    )
    trader = await Conn.open(server.url, tokens[trader_wallet])
    state = await trader.join(environment_id, trader_wallet)
    setup = time.perf_counter() - started

    await server.settle()
    sent_at: dict[int, float] = {}
    replies: list[float] = []
    refusals: Counter[str] = Counter()
    cpu0, start = server.cpu(), time.perf_counter()
    for _ in range(FANOUT_TRADES):
        sent, received, reply = await trader.request(
            "VIRTUAL_TRADE",
            {"environmentId": environment_id, "amount": FANOUT_AMOUNT, "isBuy": True},
        )
        if reply["type"] != "VIRTUAL_TRADE_EXECUTED":
            refusals[reply["data"]["code"]] += 1
            continue
        sent_at[int(reply["data"]["sequence"])] = sent
        replies.append(received - sent)
    trades_done = time.perf_counter()
    executed = len(sent_at)
    all_in = await wait_until(
        lambda: all(len(listener.trade_seen) >= executed for listener in listeners), 30
    )
    wall, cpu = time.perf_counter() - start, server.cpu() - cpu0

    delivery = [
        seen - sent_at[sequence]
        for listener in listeners
        for sequence, seen in listener.trade_seen.items()
        if sequence in sent_at
    ]
    complete = sum(
        1 for listener in listeners if set(listener.trade_seen) == set(sent_at) and all_in
    )
    frames = sum(listener.trade_frames for listener in listeners)
    duplicates = sum(listener.duplicates for listener in listeners)
    dropped = [listener.close_code for listener in listeners if listener.reader.done()]
    others = sum((listener.others for listener in listeners), Counter())

    await bounded((conn.close() for conn in [*listeners, trader]), limit=LISTENERS + 1)
    rows = [
        (name, "listeners", str(LISTENERS)),
        (name, "setup (connect+join) s", f"{setup:.2f}"),
        (name, "participants at trader's join", str(state["data"]["participants"])),
        (name, "trades executed", f"{executed}/{FANOUT_TRADES}"),
        (name, "server CPU µs/delivered frame", f"{cpu / (FANOUT_TRADES * LISTENERS) * 1e6:.0f}"),
        (name, "server CPU ms/trade (incl. fan-out)", f"{cpu / FANOUT_TRADES * 1000:.1f}"),
        (name, "trade reply p50 ms", ms(percentile(replies, 50))),
        (name, "trade reply p99 ms", ms(percentile(replies, 99))),
        (name, "delivery p50 ms", ms(percentile(delivery, 50))),
        (name, "delivery p99 ms", ms(percentile(delivery, 99))),
        (
            name,
            "phase s (replies / delivered)",
            f"{trades_done - start:.2f} / {wall:.2f}",
        ),
        (name, "frames delivered", f"{frames}/{FANOUT_TRADES * LISTENERS}"),
        (name, "listeners with all trades", f"{complete}/{LISTENERS}"),
    ]
    if duplicates:
        rows.append((name, "duplicate frames", str(duplicates)))
    if refusals:
        rows.append((name, "refused trades", repr(dict(refusals))))
    if dropped:
        rows.append((name, "listeners disconnected early", repr(Counter(dropped))))
    if others:
        rows.append((name, "other frames to listeners", repr(dict(others))))
    return rows


async def concurrent(server: Daphne, environment_id: str, tokens: dict[str, str]) -> list[Row]:
    name = "concurrent"
    wallets = list(tokens)
    traders: list[Conn] = await bounded(Conn.open(server.url, tokens[w]) for w in wallets)
    await bounded(
        trader.join(environment_id, wallet) for trader, wallet in zip(traders, wallets, strict=True)
    )
    await server.settle()

    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    own: list[set[int]] = [set() for _ in traders]

    async def trade_randomly(index: int) -> None:
        trader, rng = traders[index], random.Random(index)  # noqa: S311 (not cryptography)
        tokens_held = 0
        for _ in range(TRADES_EACH):
            if tokens_held and rng.random() < 0.4:
                amount, is_buy = str(max(1, tokens_held * rng.randint(1, 100) // 100)), False
            else:
                amount, is_buy = str(rng.randint(1, 3 * 10**9)), True
            sent, received, reply = await trader.request(
                "VIRTUAL_TRADE",
                {"environmentId": environment_id, "amount": amount, "isBuy": is_buy},
            )
            latencies.append(received - sent)
            if reply["type"] == "VIRTUAL_TRADE_EXECUTED":
                tokens_held = int(reply["data"]["balance"]["token"])
                own[index].add(int(reply["data"]["sequence"]))
                outcomes["executed"] += 1
            else:
                outcomes[reply["data"]["code"]] += 1

    cpu0, start = server.cpu(), time.perf_counter()
    await asyncio.gather(*(trade_randomly(index) for index in range(len(traders))))
    trading_wall = time.perf_counter() - start
    executed = outcomes["executed"]
    expected = set(range(1, executed + 1))
    all_in = await wait_until(
        lambda: all(
            len(trader.trade_seen) + len(own[i]) >= executed for i, trader in enumerate(traders)
        ),
        30,
    )
    cpu = server.cpu() - cpu0
    complete = sum(
        1
        for i, trader in enumerate(traders)
        if all_in and set(trader.trade_seen) | own[i] == expected
    )
    duplicates = sum(trader.duplicates for trader in traders)
    await bounded(trader.close() for trader in traders)
    rows = [
        (name, "traders x trades", f"{TRADERS} x {TRADES_EACH}"),
        (name, "outcomes", ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items()))),
        (name, "trades/s (executed)", f"{executed / trading_wall:.0f}"),
        (name, "reply p50 ms", ms(percentile(latencies, 50))),
        (name, "reply p99 ms", ms(percentile(latencies, 99))),
        (name, "server CPU µs/trade (executed)", f"{cpu / max(executed, 1) * 1e6:.0f}"),
        (name, "traders that saw every trade once", f"{complete}/{TRADERS}"),
    ]
    if duplicates:
        rows.append((name, "duplicate frames", str(duplicates)))
    return rows


async def price_fanout(
    server: Daphne, environment_id: str, mint: str, tokens: dict[str, str]
) -> list[Row]:
    name = "price fan-out"
    [(wallet, token)] = tokens.items()
    started = time.perf_counter()
    subscribers: list[PriceSub] = await in_chunks(
        (PriceSub.open(server.url, mint, environment_id) for _ in range(SUBSCRIBERS)),
        SUBSCRIBE_CHUNK,
    )
    setup = time.perf_counter() - started
    trader = await Conn.open(server.url, token)
    await trader.join(environment_id, wallet)
    # Opened now, subscribed only after the last trade: its snapshot is the final price.
    late = await websockets.connect(server.url, max_size=2**22, open_timeout=30)
    initial = {subscriber.snapshot["price"] for subscriber in subscribers}
    await server.settle()

    lateness: list[float] = []  # how far behind schedule each send went out
    replies: list[tuple[float, float, dict[str, Any]] | BaseException] = []

    async def trade() -> tuple[float, float, dict[str, Any]]:
        return await trader.request(
            "VIRTUAL_TRADE",
            {"environmentId": environment_id, "amount": PRICE_AMOUNT, "isBuy": True},
            timeout=20,
        )

    cpu0, start = server.cpu(), time.perf_counter()
    tasks = []
    for index in range(PRICE_TRADES):
        due = start + index / PRICE_RATE
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(time.perf_counter() - due)
        tasks.append(asyncio.create_task(trade()))
    replies = await asyncio.gather(*tasks, return_exceptions=True)
    trading_end = time.perf_counter()
    trading_cpu = server.cpu() - cpu0

    executed = [r for r in replies if not isinstance(r, BaseException)]
    failures = Counter(type(r).__name__ for r in replies if isinstance(r, BaseException))
    refusals = Counter(
        reply["data"].get("code", reply["type"])
        for _, _, reply in executed
        if reply["type"] != "VIRTUAL_TRADE_EXECUTED"
    )
    done = [(s, r, reply) for s, r, reply in executed if reply["type"] == "VIRTUAL_TRADE_EXECUTED"]
    last_reply = max((received for _, received, _ in executed), default=trading_end)
    last = max(done, key=lambda item: int(item[2]["data"]["sequence"]), default=None)

    await late.send(
        json.dumps(
            {
                "type": "SUBSCRIBE_PRICE",
                "requestId": "late",
                "data": {"mintAddress": mint, "environmentId": environment_id},
            }
        )
    )
    snapshot = json.loads(await asyncio.wait_for(late.recv(), 20))
    if snapshot.get("type") != "PRICE_UPDATE":
        raise RuntimeError(f"unexpected late subscription reply: {snapshot}")
    final = str(snapshot["data"]["price"])
    await late.close()
    reserves_price = ""
    if last is not None:
        reserves = last[2]["data"]["newReserves"]
        reserves_price = format(
            decimal.Decimal(reserves["sol"]) / (decimal.Decimal(reserves["token"]) * 1000), "f"
        )

    # Only buys: the final price is the last one a subscriber gets (a cheap check to poll).
    all_seen = await wait_until(
        lambda: all(sub.updates and sub.updates[-1][1] == final for sub in subscribers),
        max(0.0, last_reply + FINAL_WAIT - time.perf_counter()),
    )
    wall, cpu = time.perf_counter() - start, server.cpu() - cpu0
    deadline = last_reply + FINAL_WAIT

    latencies = []
    for subscriber in subscribers:
        # The final price may come before the trader's own reply: count from the first frame.
        seen = subscriber.first_seen(final)
        if seen is not None and seen <= deadline:
            latencies.append(seen - last_reply)
    prompt = sum(1 for latency in latencies if latency <= FINAL_FAST)
    early = sum(1 for latency in latencies if latency < 0)
    frames = sum(len(subscriber.updates) for subscriber in subscribers)
    trading_wall = trading_end - start
    busiest = max((subscriber.busiest_second() for subscriber in subscribers), default=0)
    dropped = Counter(sub.close_code for sub in subscribers if sub.reader.done())
    others = sum((subscriber.others for subscriber in subscribers), Counter())
    reply_times = [received - sent for sent, received, _ in done]

    await bounded((sub.close() for sub in subscribers), limit=SUBSCRIBE_CHUNK)
    await trader.close()
    rows = [
        (name, "subscribers", str(SUBSCRIBERS)),
        (name, "setup (connect+subscribe) s", f"{setup:.2f}"),
        (name, "trades executed", f"{len(done)}/{PRICE_TRADES} at {PRICE_RATE}/s"),
        (
            name,
            "send lateness p99 / max ms",
            f"{ms(percentile(lateness, 99))} / {ms(max(lateness))}",
        ),
        (name, "trade reply p50 ms", ms(percentile(reply_times, 50))),
        (name, "trade reply p99 ms", ms(percentile(reply_times, 99))),
        (name, "trading phase s (first send → last reply)", f"{trading_wall:.2f}"),
        (name, "server cores used (trading phase)", f"{trading_cpu / trading_wall:.2f}"),
        (name, "server cores used (incl. final wait)", f"{cpu / wall:.2f}"),
        (name, "PRICE_UPDATE frames delivered", str(frames)),
        (
            name,
            "PRICE_UPDATEs per subscriber per s (mean / busiest 1 s)",
            f"{frames / SUBSCRIBERS / trading_wall:.2f} / {busiest}",
        ),
        (name, "final price (late snapshot / newReserves)", f"{final} / {reserves_price}"),
        (name, "final price after last reply p50 ms", ms(percentile(latencies, 50))),
        (name, "final price after last reply p99 ms", ms(percentile(latencies, 99))),
        (name, "final price after last reply max ms", ms(max(latencies, default=math.nan))),
        (
            name,
            f"saw final price within {FINAL_FAST * 1000:.0f} ms / {FINAL_WAIT:.0f} s",
            f"{prompt}/{SUBSCRIBERS} / {len(latencies)}/{SUBSCRIBERS}",
        ),
    ]
    if early:
        rows.append((name, "saw final price before the trader's reply", str(early)))
    if not all_seen:
        rows.append((name, "never saw the final price", str(SUBSCRIBERS - len(latencies))))
    if len(initial) != 1:
        rows.append((name, "differing snapshot prices", repr(sorted(initial))))
    if refusals:
        rows.append((name, "refused trades", repr(dict(refusals))))
    if failures:
        rows.append((name, "failed trade requests", repr(dict(failures))))
    if dropped:
        rows.append((name, "subscribers disconnected early", repr(dict(dropped))))
    if others:
        rows.append((name, "other frames to subscribers", repr(dict(others))))
    return rows


# --- main -------------------------------------------------------------------------------------


def issue_tokens(count: int) -> dict[str, str]:
    return {wallet: token_issue(wallet).token for wallet in (new_wallet() for _ in range(count))}


def table(header: str, rows: list[Row]) -> str:
    lines = [header, "", "| scenario | metric | value |", "|---|---|---|"]
    lines += [f"| {scenario} | {metric} | {value} |" for scenario, metric, value in rows]
    return "\n".join(lines) + "\n"


async def run_all(
    server: Daphne, fanout_env: str, trading_env: str, price_env: tuple[str, str]
) -> list[Row]:
    rows: list[Row] = []
    for label, scenario in (
        ("heartbeat", lambda: heartbeat(server)),
        ("fan-out", lambda: fanout(server, fanout_env, issue_tokens(LISTENERS + 1))),
        ("concurrent", lambda: concurrent(server, trading_env, issue_tokens(TRADERS))),
        ("price fan-out", lambda: price_fanout(server, *price_env, issue_tokens(1))),
    ):
        print(f"… {label}", flush=True)
        started = time.perf_counter()
        rows += await scenario()
        rows.append((label, "scenario wall s", f"{time.perf_counter() - started:.1f}"))
        await server.settle()
    return rows


def raise_file_limit(wanted: int) -> None:
    """Allow ``wanted`` open files (up to the hard limit); the server subprocess inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main() -> None:
    OUT_DIR.mkdir(exist_ok=True)
    # Both ends of every subscriber's socket live on this machine, the server's in the child.
    raise_file_limit(SUBSCRIBERS + LISTENERS + 1024)
    check_migrated()
    header = (
        f"FunPump room bench: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, "
        f"Python {platform.python_version()}, database {describe_database()}, "
        f"channel layer {describe_layer()}, {os.cpu_count()} CPUs"
    )
    print(header, flush=True)
    stamp = f"{datetime.datetime.now():%H%M%S}"
    constants = CurveConstants(starting_sol_balance=BIG_BALANCE)
    fanout_env = environment_create(name=f"bench fan-out {stamp}", constants=constants).id
    trading_env = environment_create(name=f"bench trading {stamp}", constants=constants).id
    price = environment_create(name=f"bench prices {stamp}", constants=constants)
    price_env = (price.id, price.token_mint)
    connections.close_all()  # the server writes next; hold no connection (nor SQLite lock)

    server = Daphne()
    try:
        server.start()
        print(f"daphne pid {server.pid} on 127.0.0.1:{server.port}, log {server.log}", flush=True)
        started = time.perf_counter()
        rows = asyncio.run(run_all(server, fanout_env, trading_env, price_env))
        counts, samples = server.problems()
        rows.append(("server", "total wall s", f"{time.perf_counter() - started:.1f}"))
        rows.append(("server", "total CPU s", f"{server.cpu():.2f}"))
        rows.append(
            (
                "server",
                "log warnings / errors / tracebacks",
                f"{counts['WARNING']} / {counts['ERROR'] + counts['CRITICAL']} / "
                f"{counts['Traceback']}",
            )
        )
    finally:
        server.stop()

    report = table(header, rows)
    print()
    print(report)
    if samples:
        print("daphne log (first problem lines):")
        for line in samples:
            print(f"  {line}")
    (OUT_DIR / "room.md").write_text(report)
    print(f"written to {OUT_DIR / 'room.md'}")


if __name__ == "__main__":
    main()
