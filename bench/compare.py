"""FunPump against raw baselines, in the same run, on the same load generator: ``make bench``.

Starts FunPump as deployed (``python -m funpump.serve``, DEBUG off, PostgreSQL, Redis; ``N``
processes on ``N`` ports, clients spread over them) and the raw baseline
(``bench/baseline_server.py``: ``websockets`` + raw async psycopg), and drives both with the
same client code, scenario by scenario, FunPump then its baseline back to back, ``K`` times
(``--pairs``). It prints one Markdown table of medians and ratios (FunPump / baseline) and saves
it under ``bench/results/<date>-<host>[-<label>].md``.

Server CPU is read from ``/proc/<pid>/stat`` of the server processes; PostgreSQL's and Redis's
from their processes; the *foreign* CPU is the machine's busy time (``/proc/stat``) minus all of
those and the load generator's own, in cores: what else ran on the machine meanwhile.

    .venv/bin/python bench/compare.py [--processes N] [--pairs K] [--quick]
                                      [--server-root /tmp/before] [--label before]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import random
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
import websockets

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LOGS = ROOT / ".bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_BALANCE = 10**15  # lamports: nobody runs out
DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/funpump_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
REDIS_PREFIX = "funpump-bench"
GATE = 100  # sockets opening (and joining) at once


@dataclass(frozen=True)
class Sizes:
    heartbeat_connections: tuple[int, ...] = (10, 100)
    heartbeats: int = 4000
    fanout_members: tuple[int, ...] = (100, 1000)
    fanout_lines: int = 40
    trade_configs: tuple[tuple[int, int], ...] = ((10, 1), (50, 1), (50, 10))  # traders, envs
    trades: int = 1500  # in all, per configuration
    connect: tuple[int, ...] = (2000, 5000)


QUICK = Sizes(
    heartbeat_connections=(10, 100),
    heartbeats=1000,
    fanout_members=(100, 300),
    fanout_lines=10,
    trade_configs=((10, 1), (50, 1), (50, 10)),
    trades=300,
    connect=(300,),
)


# --- measuring --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (every core)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def store_cpu(database: str) -> dict[str, dict[int, float]]:
    """CPU seconds of PostgreSQL's and Redis's processes serving the bench, by store and pid.

    PostgreSQL's backends of other databases (the machine is shared) are left out: their CPU is
    foreign. Redis has one process, whoever its other clients are.
    """
    found: dict[str, dict[int, float]] = {"postgres": {}, "redis": {}}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            if name == "postgres":
                command = (entry / "cmdline").read_bytes().decode(errors="replace")
                # "postgres: user database host(port) state" is a client backend.
                if "(" in command and f" {database} " not in command:
                    continue
            elif name != "redis-server":
                continue
        except OSError:
            continue
        store = "postgres" if name == "postgres" else "redis"
        found[store][int(entry.name)] = cpu_seconds(int(entry.name))
    return found


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_connections(pid: int, redis_port: int) -> int:
    """TCP sockets of ``pid`` connected to Redis's port (its Redis clients)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == redis_port and fields[9] in inodes:
                count += 1
    return count


@dataclass
class Meter:
    """CPU of the servers, the stores, the load generator and everything else over a phase."""

    servers: list[int]
    others: list[int]  # our other server processes, idle meanwhile
    database: str  # the bench's database name (its PostgreSQL backends)
    started: dict[str, Any] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)

    def read(self) -> dict[str, Any]:
        return {
            "wall": time.perf_counter(),
            "server": sum(cpu_seconds(pid) for pid in self.servers),
            "ours": sum(cpu_seconds(pid) for pid in self.others) + cpu_seconds(os.getpid()),
            "stores": store_cpu(self.database),
            "machine": machine_busy(),
        }

    def __enter__(self) -> Meter:
        self.started = self.read()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self.read()
        self.spent = {
            key: end[key] - self.started[key] for key in ("wall", "server", "ours", "machine")
        }
        for store, pids in end["stores"].items():
            # A backend opened during the phase counts from zero.
            before = self.started["stores"][store]
            self.spent[store] = sum(cpu - before.get(pid, 0.0) for pid, cpu in pids.items())

    @property
    def wall(self) -> float:
        return self.spent["wall"]

    @property
    def server(self) -> float:
        return self.spent["server"]

    @property
    def stores(self) -> float:
        return self.spent["postgres"] + self.spent["redis"]

    def per_op(self, operations: int) -> dict[str, float]:
        """The CPU figures of a result: µs per operation, and the foreign cores."""
        return {
            "cpu_per_op_us": self.server / operations * 1e6,
            "stores_per_op_us": self.stores / operations * 1e6,
            "postgres_per_op_us": self.spent["postgres"] / operations * 1e6,
            "redis_per_op_us": self.spent["redis"] / operations * 1e6,
            "foreign": self.foreign_cores,
        }

    @property
    def foreign_cores(self) -> float:
        spent = self.spent
        foreign = spent["machine"] - spent["server"] - spent["ours"] - self.stores
        return max(foreign, 0.0) / spent["wall"]


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


# --- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Servers:
    """One kind of server (FunPump or the baseline): its processes, one port each."""

    def __init__(self, name: str, commands: list[list[str]], cwd: Path, env: dict[str, str]):
        self.name = name
        self.ports = [free_port() for _ in commands]
        self.commands = [
            [*command, str(port)] for command, port in zip(commands, self.ports, strict=True)
        ]
        self.cwd, self.env = cwd, env
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{port}/ws" for port in self.ports]

    def url(self, index: int) -> str:
        """Client ``index``'s server: clients are spread over the processes in turn."""
        return self.urls[index % len(self.urls)]

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def start(self) -> None:
        LOGS.mkdir(exist_ok=True)
        for index, command in enumerate(self.commands):
            log = (LOGS / f"{self.name}-{index}.log").open("wb")
            self.processes.append(
                subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
                    command, cwd=self.cwd, env=self.env, stdout=log, stderr=log
                )
            )
        for process, port in zip(self.processes, self.ports, strict=True):
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"{self.name} exited early: see {LOGS}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{self.name} did not listen within 60 s") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def rss_kb(self) -> int:
        return sum(rss_kb(pid) for pid in self.pids)

    async def settle(self, limit: float = 15.0) -> None:
        """Wait until the processes stop burning CPU (leftovers of the previous phase)."""
        deadline = time.monotonic() + limit
        before = sum(cpu_seconds(pid) for pid in self.pids)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            now = sum(cpu_seconds(pid) for pid in self.pids)
            if now - before < 0.01 * len(self.pids):
                return
            before = now


# --- the client -------------------------------------------------------------------------------


class Client:
    """A websocket with one reader: replies by requestId; other frames to ``on_frame``."""

    def __init__(self, ws: Any, on_frame: Callable[[str], None] | None) -> None:
        self.ws = ws
        self.on_frame = on_frame
        # FunPump remembers a wallet's requestIds (idempotency): never reuse one across runs.
        self.prefix = secrets.token_hex(6)
        self.ids = itertools.count(1)
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str, token: str | None = None, on_frame: Callable[[str], None] | None = None
    ) -> Client:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        ws = await websockets.connect(
            url,
            additional_headers=headers,
            max_size=2**22,
            open_timeout=120,
            compression=None,
            ping_interval=None,
        )
        return cls(ws, on_frame)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                # Only replies carry a requestId; broadcasts are left to on_frame unparsed.
                if '"requestId":' in raw or '"requestId": ' in raw:
                    message = json.loads(raw)
                    waiter = self.waiters.pop(str(message.get("requestId")), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message)
                        continue
                if self.on_frame is not None:
                    self.on_frame(raw)
        except websockets.ConnectionClosed:
            pass
        finally:
            for waiter in self.waiters.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("closed"))

    async def request(self, kind: str, data: Any = None, timeout: float = 120) -> dict[str, Any]:
        request_id = f"{self.prefix}-{next(self.ids)}"
        waiter = asyncio.get_running_loop().create_future()
        self.waiters[request_id] = waiter
        frame: dict[str, Any] = {"type": kind, "requestId": request_id}
        if data is not None:
            frame["data"] = data
        await self.ws.send(json.dumps(frame))
        return await asyncio.wait_for(waiter, timeout)

    async def join(self, environment_id: str, wallet: str) -> dict[str, Any]:
        reply = await self.request(
            "JOIN_ENVIRONMENT", {"environmentId": environment_id, "userId": wallet}
        )
        if reply["type"] != "ENVIRONMENT_STATE":
            raise RuntimeError(f"join refused: {reply}")
        return reply

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


async def gated(coroutines: Iterable[Awaitable[Any]], limit: int = GATE) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(coroutine: Awaitable[Any]) -> Any:
        async with gate:
            return await coroutine

    return await asyncio.gather(*(run(coroutine) for coroutine in coroutines))


async def close_all(clients: Iterable[Client]) -> None:
    await gated((client.close() for client in clients), limit=500)


# --- the run's context ------------------------------------------------------------------------


@dataclass
class Run:
    """What a scenario needs: the servers, fresh environments, signed-in wallets, the ledger."""

    server: Servers
    other: Servers
    database: str
    environments: list[str]
    tokens: dict[str, str]
    funpump: bool
    redis_port: int

    def environment(self) -> str:
        return self.environments.pop()

    def wallets(self, count: int) -> list[str]:
        return list(itertools.islice(self.tokens, count))

    def meter(self) -> Meter:
        return Meter(self.server.pids, self.other.pids, urlsplit(self.database).path[1:])

    async def open_joined(
        self,
        wallets: list[str],
        environments: list[str],
        on_frame: Callable[[int], Callable[[str], None] | None] = lambda _: None,
        tolerant: bool = False,
    ) -> list[Any]:
        """Sign in (bearer token), connect and join, ``wallets[i]`` to ``environments[i % E]``.

        ``tolerant``: a socket refused or failing to join is returned as its exception (a count
        of the connect scenario) instead of ending the scenario.
        """

        async def one(index: int, wallet: str) -> Client | Exception:
            token = self.tokens[wallet] if self.funpump else None
            try:
                client = await Client.open(self.server.url(index), token, on_frame(index))
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                if tolerant:
                    return exc
                raise
            try:
                await client.join(environments[index % len(environments)], wallet)
            except (RuntimeError, ConnectionError, TimeoutError) as exc:
                await client.close()
                if tolerant:
                    return exc
                raise
            return client

        return await gated(one(index, wallet) for index, wallet in enumerate(wallets))

    async def positions_for_baseline(self, pairs: list[tuple[str, str]]) -> None:
        """The baseline's JOIN writes nothing: its traders' positions are made here."""
        async with (
            await psycopg.AsyncConnection.connect(self.database) as conn,
            conn.cursor() as cursor,
        ):
            await cursor.executemany(
                "INSERT INTO environments_position (environment_id, wallet, sol_balance,"
                " token_balance, joined_at, updated_at) SELECT %s, %s, starting_sol_balance,"
                " 0, now(), now() FROM environments_environment WHERE id = %s"
                " ON CONFLICT DO NOTHING",
                [(env, wallet, env) for env, wallet in pairs],
            )


# --- scenarios --------------------------------------------------------------------------------

Result = dict[str, float | str]


async def heartbeat(run: Run, connections: int, messages: int) -> Result:
    clients = [await Client.open(run.server.url(i)) for i in range(connections)]
    for client in clients:
        for _ in range(5):
            await client.request("HEARTBEAT")
    await run.server.settle()
    each = messages // connections

    async def beat(client: Client) -> None:
        for _ in range(each):
            reply = await client.request("HEARTBEAT")
            if reply["type"] != "HEARTBEAT":
                raise RuntimeError(f"heartbeat answered with {reply}")

    with run.meter() as meter:
        await asyncio.gather(*(beat(client) for client in clients))
    await close_all(clients)
    done = each * connections
    return {
        **meter.per_op(done),
        "rate": done / meter.wall,
    }


async def fanout(run: Run, members: int, lines: int) -> Result:
    """One member says ``lines`` lines, one at a time; how long until the last member has it."""
    environment = run.environment()
    wallets = run.wallets(members + 1)
    arrived: dict[int, list[float]] = {}
    everyone = asyncio.Event()  # the line being said has reached every member

    def listener(_: int) -> Callable[[str], None]:
        def on_frame(raw: str) -> None:
            at = raw.find("bench line ")
            if at >= 0:
                number = int(raw[at + 11 : raw.index(" ", at + 11)])
                times = arrived.setdefault(number, [])
                times.append(time.perf_counter())
                if len(times) == members:
                    everyone.set()

        return on_frame

    clients = await run.open_joined(wallets[:members], [environment], listener)
    [sender] = await run.open_joined([wallets[members]], [environment])
    await run.server.settle()
    to_last: list[float] = []
    with run.meter() as meter:
        for number in range(lines):
            everyone.clear()
            sent = time.perf_counter()
            reply = await sender.request(
                "CHAT_MESSAGE",
                {"environmentId": environment, "message": f"bench line {number} of the run"},
            )
            if reply["type"] != "CHAT_MESSAGE":
                raise RuntimeError(f"chat refused: {reply}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone.wait(), 30)
            times = arrived.get(number, [])
            if len(times) < members:
                raise RuntimeError(f"line {number} reached {len(times)}/{members} members")
            to_last.append(max(times) - sent)
    await close_all([*clients, sender])
    deliveries = lines * members
    return {
        "p50_ms": percentile(to_last, 50) * 1000,
        "p99_ms": percentile(to_last, 99) * 1000,
        **meter.per_op(deliveries),
    }


async def trades(run: Run, traders: int, spread: int, total: int) -> Result:
    """``traders`` traders over ``spread`` environments, each trading in a closed loop."""
    environments = [run.environment() for _ in range(spread)]
    wallets = run.wallets(traders)
    room_of = {wallet: environments[i % spread] for i, wallet in enumerate(wallets)}
    if not run.funpump:
        await run.positions_for_baseline(list((env, wallet) for wallet, env in room_of.items()))
    broadcasts = [0]
    expected = [-1]  # known once the trading is over
    delivered = asyncio.Event()

    def counter(_: int) -> Callable[[str], None]:
        def on_frame(raw: str) -> None:
            if "VIRTUAL_TRADE_EXECUTED" in raw:
                broadcasts[0] += 1
                if broadcasts[0] == expected[0]:
                    delivered.set()

        return on_frame

    clients = await run.open_joined(wallets, environments, counter)
    await run.server.settle()
    acknowledged = dict.fromkeys(environments, 0)
    refused: dict[str, int] = {}
    each = total // traders

    async def trade(index: int) -> None:
        client, rng = clients[index], random.Random(index)  # noqa: S311 (not cryptography)
        environment, held = environments[index % spread], 0
        for _ in range(each):
            if held and rng.random() < 0.4:
                amount, is_buy = max(1, held * rng.randint(1, 100) // 100), False
            else:
                # Up to 0.1 SOL: 1,500 trades on one curve stay short of completing it.
                amount, is_buy = rng.randint(10**6, 10**8), True
            reply = await client.request(
                "VIRTUAL_TRADE",
                {"environmentId": environment, "amount": str(amount), "isBuy": is_buy},
            )
            if reply["type"] == "VIRTUAL_TRADE_EXECUTED":
                acknowledged[environment] += 1
                held = int(reply["data"]["balance"]["token"])
            else:
                code = reply["data"]["code"]
                refused[code] = refused.get(code, 0) + 1

    with run.meter() as meter:
        await asyncio.gather(*(trade(index) for index in range(traders)))
    # Every trade goes to every other trader of its environment.
    expected[0] = sum(count * (traders // spread - 1) for count in acknowledged.values())
    if broadcasts[0] < expected[0]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(delivered.wait(), 30)
    await close_all(clients)
    problems = await ledger(run.database, acknowledged)
    if broadcasts[0] != expected[0]:
        problems.append(f"{broadcasts[0]}/{expected[0]} trade broadcasts delivered")
    if refused:
        problems.append(f"refused {refused}")
    done = sum(acknowledged.values())
    if not done:
        raise RuntimeError(f"no trade executed: {problems}")
    return {
        "rate": done / meter.wall,
        **meter.per_op(done),
        "ledger": "; ".join(problems) or "ok",
    }


async def ledger(database: str, acknowledged: dict[str, int]) -> list[str]:
    """The environments' books: SOL and tokens conserved, no negative balance, no lost trade."""
    problems = []
    async with await psycopg.AsyncConnection.connect(database) as conn:
        for environment, count in acknowledged.items():
            cursor = await conn.execute(
                """
                SELECT e.starting_sol_balance, e.real_sol_reserves, e.real_token_reserves,
                       e.initial_real_token, e.sequence,
                       (SELECT count(*) FROM environments_position p WHERE p.environment_id = e.id),
                       (SELECT coalesce(sum(sol_balance), 0) FROM environments_position p
                        WHERE p.environment_id = e.id),
                       (SELECT coalesce(sum(token_balance), 0) FROM environments_position p
                        WHERE p.environment_id = e.id),
                       (SELECT least(coalesce(min(sol_balance), 0), coalesce(min(token_balance), 0))
                        FROM environments_position p WHERE p.environment_id = e.id),
                       (SELECT count(*) FROM trading_trade t WHERE t.environment_id = e.id),
                       (SELECT coalesce(sum(protocol_fee + creator_fee), 0) FROM trading_trade t
                        WHERE t.environment_id = e.id)
                FROM environments_environment e WHERE e.id = %s
                """,
                (environment,),
            )
            row = await cursor.fetchone()
            assert row is not None
            start, real_sol, real_token, initial_token, sequence, positions = row[:6]
            sol, tokens, lowest, trade_rows, fees = row[6:]
            if sol + real_sol + fees != positions * start:
                problems.append(f"{environment}: SOL not conserved")
            if tokens + real_token != initial_token:
                problems.append(f"{environment}: tokens not conserved")
            if lowest < 0:
                problems.append(f"{environment}: negative balance")
            if not trade_rows == sequence == count:
                problems.append(
                    f"{environment}: {trade_rows} trades, sequence {sequence}, {count} acknowledged"
                )
    return problems


async def connect(run: Run, sockets: int) -> Result:
    """Sign in, connect and join ``sockets`` sockets to one environment; then close them."""
    environment = run.environment()
    wallets = run.wallets(sockets)
    await run.server.settle()
    rss_before = run.server.rss_kb()
    fds_before = sum(open_fds(pid) for pid in run.server.pids)
    with run.meter() as meter:
        opened = await run.open_joined(wallets, [environment], tolerant=True)
    clients = [client for client in opened if isinstance(client, Client)]
    failures = sorted(
        {f"{type(exc).__name__}: {exc}"[:80] for exc in opened if not isinstance(exc, Client)}
    )
    await run.server.settle()
    rss_joined = run.server.rss_kb()
    await close_all(clients)
    await asyncio.sleep(3)  # the server notices the closes
    await run.server.settle()
    joined = max(len(clients), 1)
    return {
        "seconds": meter.wall,
        **meter.per_op(joined),
        "failed": sockets - len(clients),
        "failures": "; ".join(failures),
        "rss_per_conn_kb": (rss_joined - rss_before) / joined,
        "redis_after": sum(redis_connections(pid, run.redis_port) for pid in run.server.pids),
        "fds_after": sum(open_fds(pid) for pid in run.server.pids) - fds_before,
    }


# --- the table --------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(ours: list[float], theirs: list[float]) -> float:
    """The median of the pairs' ratios (FunPump / baseline)."""
    return median([a / b if b else float("inf") for a, b in zip(ours, theirs, strict=True)])


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def table(results: dict[str, list[tuple[Result, Result]]], processes: int) -> str:
    """One row per figure: FunPump's median, the baseline's, the median of the pairs' ratios.

    The per-operation columns (server CPU, PostgreSQL + Redis CPU, foreign CPU) are a
    scenario's, so they are given once, on its first row.
    """
    lines = [
        "| scenario | FunPump | baseline | ratio | server CPU/op (FunPump / baseline) "
        "| PostgreSQL+Redis CPU/op | foreign CPU, cores |",
        "|---|---|---|---|---|---|---|",
    ]

    def cells(pairs: list[tuple[Result, Result]], key: str) -> tuple[list[float], list[float]]:
        return [float(a[key]) for a, _ in pairs], [float(b[key]) for _, b in pairs]

    def both(pairs: list[tuple[Result, Result]], key: str, unit: str, digits: int = 0) -> str:
        ours, theirs = cells(pairs, key)
        return f"{fmt(median(ours), digits)}{unit} / {fmt(median(theirs), digits)}{unit}"

    def row(
        name: str,
        pairs: list[tuple[Result, Result]],
        key: str,
        unit: str,
        digits: int = 0,
        first: bool = False,
    ) -> None:
        ours, theirs = cells(pairs, key)
        per_op = " | | | "
        if first:
            per_op = (
                f" | {both(pairs, 'cpu_per_op_us', ' µs')}"
                f" | {both(pairs, 'stores_per_op_us', ' µs')}"
                f" | {both(pairs, 'foreign', '', 2)} "
            )
        lines.append(
            f"| {name} | {fmt(median(ours), digits)} {unit} | {fmt(median(theirs), digits)} {unit}"
            f" | {ratio(ours, theirs):.2f}\N{MULTIPLICATION SIGN}{per_op}|"
        )

    for name, every_pair in results.items():
        kind, size = name.split(":")
        sides = ("FunPump", "baseline")
        for failure in sorted(
            {
                f"{side}: {r['error']}"
                for pair in every_pair
                for side, r in zip(sides, pair, strict=True)
                if "error" in r
            }
        ):
            lines.append(f"| {name} failed | {failure} | | | | | |")
        # Medians over the pairs where both sides ran to the end.
        pairs = [pair for pair in every_pair if not any("error" in r for r in pair)]
        if not pairs:
            continue
        if kind == "heartbeat":
            row(
                f"HEARTBEAT, {size} connections: server CPU per message",
                pairs,
                "cpu_per_op_us",
                "µs",
                first=True,
            )
            row(f"HEARTBEAT, {size} connections: messages/s", pairs, "rate", "/s")
        elif kind == "fanout":
            row(
                f"fan-out of a chat line to {size} members: p50 to the last member",
                pairs,
                "p50_ms",
                "ms",
                1,
                first=True,
            )
            row(f"fan-out to {size}: p99 to the last member", pairs, "p99_ms", "ms", 1)
            row(f"fan-out to {size}: server CPU per delivery", pairs, "cpu_per_op_us", "µs")
        elif kind == "trades":
            traders, spread = size.split("/")
            where = "one environment" if spread == "1" else f"{spread} environments"
            row(f"trades, {traders} traders on {where}: trades/s", pairs, "rate", "/s", first=True)
            row(
                f"trades, {traders} traders on {where}: server CPU per trade",
                pairs,
                "cpu_per_op_us",
                "µs",
            )
            verdicts = sorted({str(r["ledger"]) for pair in pairs for r in pair})
            lines.append(f"| ledger after {traders} on {where} | {'; '.join(verdicts)} | | | | | |")
        elif kind == "connect":
            row(
                f"connect + sign-in token + join, {size} sockets: time",
                pairs,
                "seconds",
                "s",
                2,
                first=True,
            )
            row(f"connect + join {size}: server CPU per connection", pairs, "cpu_per_op_us", "µs")
            row(
                f"connect + join {size}: RSS per idle joined connection",
                pairs,
                "rss_per_conn_kb",
                "KB",
                1,
            )
            failed_ours = [int(a.get("failed", 0)) for a, _ in pairs]
            failed_theirs = [int(b.get("failed", 0)) for _, b in pairs]
            if any(failed_ours) or any(failed_theirs):
                why = sorted(
                    {str(r["failures"]) for pair in pairs for r in pair if r.get("failures")}
                )
                lines.append(
                    f"| {size} sockets: refused or not joined (max; the figures above are per "
                    f"joined socket) | {max(failed_ours)} | {max(failed_theirs)} | "
                    f"| {'; '.join(why)} | | |"
                )
            ours, theirs = cells(pairs, "redis_after")
            fds_ours, fds_theirs = cells(pairs, "fds_after")
            lines.append(
                f"| {size} sockets closed: Redis connections held / fds above the start (max) "
                f"| {max(ours):.0f} / {max(fds_ours):+.0f} | {max(theirs):.0f} / "
                f"{max(fds_theirs):+.0f} | | | | |"
            )
    note = (
        f"FunPump: {processes} server process{'es' if processes > 1 else ''} "
        "(clients spread over their ports); baseline: 1 process. Medians of the pairs; ratio = "
        "FunPump / baseline, the median of the pairs' ratios. CPU in µs per operation (CPU time, "
        "all threads); foreign CPU = the machine's busy cores minus the servers, PostgreSQL, "
        "Redis and the load generator."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


# --- main -------------------------------------------------------------------------------------


def raise_file_limit() -> None:
    """Every socket has both ends on this machine: allow as many files as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def ensure_database(url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?")[0]
    maintenance = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(maintenance, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def fixtures(environments: int, wallets: int) -> None:
    """In the served checkout's Django: fresh environments and signed-in wallets, as JSON."""
    import base58
    import django
    from nacl.signing import SigningKey

    sys.path.insert(0, os.getcwd())  # the served checkout (make_fixtures runs us there)
    django.setup()
    from environments.services import environment_create
    from trading.state import CurveConstants
    from wallets.services import token_issue

    stamp = f"{datetime.datetime.now():%H%M%S}"
    constants = CurveConstants(starting_sol_balance=BIG_BALANCE)
    ids = [
        environment_create(name=f"bench {stamp} {i}", constants=constants).id
        for i in range(environments)
    ]
    tokens = {}
    for _ in range(wallets):
        wallet = base58.b58encode(bytes(SigningKey.generate().verify_key)).decode()
        tokens[wallet] = token_issue(wallet).token
    # The last line of the output: Django's logging may print before it.
    print(json.dumps({"environments": ids, "tokens": tokens}))


def make_fixtures(root: Path, env: dict[str, str], environments: int, wallets: int) -> Any:
    output = subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--fixtures",
            str(environments),
            str(wallets),
        ],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.splitlines()[-1])


def scenarios(sizes: Sizes) -> list[tuple[str, Callable[[Run], Awaitable[Result]], int]]:
    """(name, scenario, environments it uses)."""
    plan: list[tuple[str, Callable[[Run], Awaitable[Result]], int]] = []
    for n in sizes.heartbeat_connections:
        plan.append((f"heartbeat:{n}", lambda run, n=n: heartbeat(run, n, sizes.heartbeats), 0))
    for n in sizes.fanout_members:
        plan.append((f"fanout:{n}", lambda run, n=n: fanout(run, n, sizes.fanout_lines), 1))
    for traders, spread in sizes.trade_configs:
        plan.append(
            (
                f"trades:{traders}/{spread}",
                lambda run, t=traders, s=spread: trades(run, t, s, sizes.trades),
                spread,
            )
        )
    for n in sizes.connect:
        plan.append((f"connect:{n}", lambda run, n=n: connect(run, n), 1))
    return plan


async def one_pair(
    plan: list[tuple[str, Callable[[Run], Awaitable[Result]], int]],
    funpump: Servers,
    baseline: Servers,
    fixture: Any,
    database: str,
    redis_port: int,
    results: dict[str, list[tuple[Result, Result]]],
) -> None:
    environments = list(fixture["environments"])
    runs = [
        Run(server, other, database, environments, fixture["tokens"], server is funpump, redis_port)
        for server, other in ((funpump, baseline), (baseline, funpump))
    ]
    for name, scenario, _ in plan:
        print(f"  {name}", end="", flush=True)
        pair = []
        for run in runs:
            started = time.perf_counter()
            try:
                pair.append(await scenario(run))
            except Exception as exc:  # a failed scenario is a result: the table says so
                pair.append({"error": f"{type(exc).__name__}: {exc}"[:200]})
            print(f"  {run.server.name} {time.perf_counter() - started:.1f} s", end="", flush=True)
        print(flush=True)
        results.setdefault(name, []).append((pair[0], pair[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1, help="FunPump server processes")
    parser.add_argument("--pairs", type=int, default=3, help="FunPump/baseline pairs")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--server-root", type=Path, default=ROOT, help="the checkout to serve")
    parser.add_argument("--label", default="", help="appended to the results file name")
    parser.add_argument("--only", default="", help="comma-separated scenario kinds to run")
    parser.add_argument(
        "--render", type=Path, help="rewrite a saved run's .md from its .json, and stop"
    )
    parser.add_argument("--fixtures", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fixtures:
        fixtures(*args.fixtures)
        return
    if args.render:
        saved = json.loads(args.render.read_text())
        report = f"{saved['header']}\n\n{table(saved['results'], saved['processes'])}"
        args.render.with_suffix(".md").write_text(report)
        print(report)
        return

    sizes = QUICK if args.quick else Sizes()
    plan = scenarios(sizes)
    if args.only:
        kinds = set(args.only.split(","))
        plan = [step for step in plan if step[0].split(":")[0] in kinds]
    raise_file_limit()
    database = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    root = args.server_root.resolve()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "funpump.settings",
        "DJANGO_DEBUG": "0",  # as deployed: debug mode records every query
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "FUNPUMP_REDIS_PREFIX": REDIS_PREFIX,
        # The load generator is one client address with thousands of sockets and a fast pace.
        "FUNPUMP_RATE_LIMIT": "100000000/60",
        "FUNPUMP_MAX_CONNECTIONS_PER_IP": "1000000",
        # No scenario speaks; the speech model would only load (CPU and RSS) at startup.
        "FUNPUMP_VOICE_PRELOAD": "0",
    }
    ensure_database(database)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=root,
        env=env,
        check=True,
    )
    redis.Redis.from_url(redis_url).ping()
    redis_port = urlsplit(redis_url).port or 6379
    wallets = max([*sizes.connect, *(n + 1 for n in sizes.fanout_members), 50])
    environments = sum(step[2] for step in plan) * 2

    header = (
        f"FunPump against raw baselines: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z},"
        f" {socket.gethostname()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" served from {root}{' (' + args.label + ')' if args.label else ''},"
        f" {args.processes} FunPump process(es), {args.pairs} pair(s)"
        f"{', quick sizes' if args.quick else ''}"
    )
    print(header, flush=True)
    results: dict[str, list[tuple[Result, Result]]] = {}
    base_fixture = make_fixtures(root, env, environments, wallets)
    interpreter = str(root / ".venv" / "bin" / "python")
    name = f"{datetime.date.today():%Y-%m-%d}-{socket.gethostname()}"
    if args.label:
        name += f"-{args.label}"
    for pair in range(args.pairs):
        fixture = (
            base_fixture
            if pair == 0
            else {
                **base_fixture,
                **make_fixtures(root, env, environments, 0),
                "tokens": base_fixture["tokens"],
            }
        )
        funpump = Servers(
            "funpump",
            [[interpreter, "-m", "funpump.serve", "-b", "127.0.0.1", "-p"]] * args.processes,
            root,
            env,
        )
        baseline = Servers(
            "baseline",
            [
                [
                    sys.executable,
                    str(ROOT / "bench" / "baseline_server.py"),
                    "--database",
                    database,
                    "--port",
                ]
            ],
            ROOT,
            os.environ.copy(),
        )
        print(f"pair {pair + 1}/{args.pairs}", flush=True)
        try:
            funpump.start()
            baseline.start()
            asyncio.run(one_pair(plan, funpump, baseline, fixture, database, redis_port, results))
        finally:
            funpump.stop()
            baseline.stop()
        # Saved after every pair: a run cut short still leaves its table.
        done = f"{header}, {pair + 1} of {args.pairs} pair(s) done"
        path = save(name, done, args.processes, results)
    print()
    print(path.read_text())
    print(f"written to {path}")


def save(name: str, header: str, processes: int, results: dict[str, Any]) -> Path:
    """``bench/results/<name>.md`` (the table) and ``.json`` (the figures, for --render)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(f"{header}\n\n{table(results, processes)}")
    saved = {"header": header, "processes": processes, "results": results}
    path.with_suffix(".json").write_text(json.dumps(saved, indent=1))
    return path


if __name__ == "__main__":
    main()
