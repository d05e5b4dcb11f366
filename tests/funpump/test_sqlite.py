"""SQLite, the embedded default, under a handful of simultaneous users.

Each test makes its own SQLite file (migrated by ``manage.py``, as a newcomer's is) and serves it
with real daphne processes, so it runs whatever database the rest of the session uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import base58
import pytest
from asgiref.sync import sync_to_async
from nacl.signing import SigningKey

from gateway.client import FunPumpClient, wallet_of
from tests.e2e.conftest import daphne_server  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[2]
ROOM = "sqlite-room"
PEOPLE = 8


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database with the schema and one environment, made by manage.py."""
    url = f"sqlite:///{tmp_path / 'funpump.sqlite3'}"
    environment = {**os.environ, "DJANGO_DEBUG": "1", "DATABASE_URL": url}
    for command in (
        ["migrate", "--noinput"],
        ["create_environment", "SQLite room", "--id", ROOM],
    ):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=environment,
            check=True,
            capture_output=True,
            timeout=120,
        )
    return url


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 (a local test server)
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as failed:
        return failed.code, {"body": failed.read().decode(errors="replace")}


def sign_in_together(base_urls: list[str], keys: list[SigningKey]) -> list[tuple[int, Any]]:
    """Everyone asks for a challenge at the same moment, then verifies at the same moment."""
    start = threading.Barrier(len(keys))
    results: list[tuple[int, Any]] = [(0, None)] * len(keys)

    def person(index: int, key: SigningKey) -> None:
        base = base_urls[index % len(base_urls)]
        wallet = wallet_of(key)
        start.wait()
        status, challenge = post_json(f"{base}/api/auth/challenge", {"wallet": wallet})
        if status != 200:
            results[index] = (status, challenge)
            start.abort()
            return
        signature = base58.b58encode(key.sign(challenge["message"].encode()).signature).decode()
        start.wait()
        fields = {"wallet": wallet, "nonce": challenge["nonce"], "signature": signature}
        results[index] = post_json(f"{base}/api/auth/verify", fields)

    threads = [threading.Thread(target=person, args=(index, key)) for index, key in enumerate(keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def test_the_default_database_runs_in_wal_mode(sqlite_url: str) -> None:
    with sqlite3.connect(sqlite_path(sqlite_url)) as database:
        assert database.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_people_signing_in_at_the_same_moment_all_get_in(daphne_server, sqlite_url):  # noqa: F811
    first, second = await asyncio.gather(
        sync_to_async(daphne_server)(DATABASE_URL=sqlite_url, REDIS_URL=""),
        sync_to_async(daphne_server)(DATABASE_URL=sqlite_url, REDIS_URL=""),
    )
    keys = [SigningKey.generate() for _ in range(PEOPLE)]
    started = time.perf_counter()
    results = await asyncio.to_thread(sign_in_together, [first.http, second.http], keys)
    print(f"{PEOPLE} sign-ins at once on SQLite: {time.perf_counter() - started:.2f} s")
    refused = [(status, body) for status, body in results if status != 200]
    assert refused == [], refused
    assert all(body["token"] for _, body in results)
    for server in (first, second):
        assert "database is locked" not in server.output()


async def test_trades_sign_ins_and_a_settlement_at_the_same_moment_all_succeed(
    daphne_server,  # noqa: F811
    sqlite_url,
):
    """Three writers at once on one SQLite file: the server's socket thread trading, its HTTP
    threads signing people in, and an operator's ``settle_rewards`` in its own process. Each
    write waits its turn; none fails."""
    trades_each = 5
    server = await sync_to_async(daphne_server)(DATABASE_URL=sqlite_url, REDIS_URL="")
    keys = [SigningKey.generate() for _ in range(PEOPLE)]
    signed = await asyncio.to_thread(sign_in_together, [server.http], keys)
    assert [status for status, _ in signed] == [200] * PEOPLE, signed
    clients = []
    for key, (_, body) in zip(keys, signed, strict=True):
        client = FunPumpClient(server.ws, token=body["token"], origin=server.http)
        await client.connect()
        joined = await client.join(ROOM, wallet_of(key))
        assert joined["type"] == "ENVIRONMENT_STATE", joined
        clients.append(client)

    async def trade(client: FunPumpClient) -> list[dict[str, Any]]:
        buy = {"environmentId": ROOM, "amount": "100000000", "isBuy": True}
        return [await client.request("VIRTUAL_TRADE", buy, timeout=60) for _ in range(trades_each)]

    async def settle() -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "DJANGO_DEBUG": "1", "DATABASE_URL": sqlite_url}
        command = [sys.executable, "manage.py", "settle_rewards"]
        return await asyncio.to_thread(
            subprocess.run, command, cwd=ROOT, env=environment, capture_output=True, text=True
        )

    newcomers = [SigningKey.generate() for _ in range(PEOPLE)]
    try:
        replies, signed_in, settled = await asyncio.gather(
            asyncio.gather(*(trade(client) for client in clients)),
            asyncio.to_thread(sign_in_together, [server.http], newcomers),
            settle(),
        )
    finally:
        for client in clients:
            await client.close()
    kinds = [reply["type"] for per_client in replies for reply in per_client]
    assert kinds == ["VIRTUAL_TRADE_EXECUTED"] * PEOPLE * trades_each, replies
    assert [status for status, _ in signed_in] == [200] * PEOPLE, signed_in
    assert settled.returncode == 0, settled.stderr
    with sqlite3.connect(sqlite_path(sqlite_url)) as database:
        (count,) = database.execute(
            "SELECT COUNT(*) FROM trading_trade WHERE environment_id = ?", (ROOM,)
        ).fetchone()
    assert count == PEOPLE * trades_each
    assert "database is locked" not in server.output()
