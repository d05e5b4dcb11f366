"""The raw baseline the benchmark holds FunPump against: the same wire work, nothing else.

One process, ``websockets`` and raw async psycopg, no Django and no Redis. It speaks just enough
of FunPump's protocol for ``bench/compare.py``'s scenarios, on the same load generator:

- ``HEARTBEAT``: parse, build the reply, dump (FunPump's reply shape);
- ``JOIN_ENVIRONMENT``: remember the socket in the room, reply with the participant count (no
  database work: the connect scenario's floor; positions for trading are made by the bench);
- ``CHAT_MESSAGE``: one ``websockets.broadcast`` of the line to the room, the sender's own copy
  as its reply;
- ``VIRTUAL_TRADE``: FunPump's transaction in raw SQL on the same tables and rows (lock the
  environment row, lock the position, update both, insert the trade; one transaction, the curve
  math of :mod:`trading.curve`), then the trade broadcast to the room and the trader's own copy.

    python bench/baseline_server.py --port 8765 --database postgres://...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import websockets
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from websockets.asyncio.server import ServerConnection, broadcast, serve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trading.curve import Curve, CurveComplete, CurveError, average_price, format_price  # noqa: E402

ENVIRONMENT = """
    SELECT virtual_sol_reserves, virtual_token_reserves, real_sol_reserves, real_token_reserves,
           protocol_fee_bps, creator_fee_bps, sequence
    FROM environments_environment WHERE id = %s FOR NO KEY UPDATE
"""
POSITION = """
    SELECT id, sol_balance, token_balance FROM environments_position
    WHERE environment_id = %s AND wallet = %s FOR UPDATE
"""
UPDATE_ENVIRONMENT = """
    UPDATE environments_environment SET virtual_sol_reserves = %s, virtual_token_reserves = %s,
        real_sol_reserves = %s, real_token_reserves = %s, sequence = %s WHERE id = %s
"""
UPDATE_POSITION = """
    UPDATE environments_position SET sol_balance = %s, token_balance = %s, updated_at = now()
    WHERE id = %s
"""
INSERT_TRADE = """
    INSERT INTO trading_trade (environment_id, wallet, is_buy, amount, sol_amount, token_amount,
        protocol_fee, creator_fee, sequence, virtual_sol_after, virtual_token_after, created_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) RETURNING id
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def error(code: str, message: str, request_id: str | None) -> str:
    return json.dumps(
        {"type": "ERROR", "requestId": request_id, "data": {"code": code, "message": message}}
    )


class Baseline:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        self.pool = pool
        self.rooms: dict[str, set[ServerConnection]] = defaultdict(set)
        self.chat_sequence: dict[str, int] = defaultdict(int)

    async def handle(self, ws: ServerConnection) -> None:
        joined: set[str] = set()
        wallet = ""  # the userId of its JOIN (FunPump takes it from the sign-in token)
        try:
            async for raw in ws:
                message = json.loads(raw)
                kind, request_id = message.get("type"), message.get("requestId")
                data = message.get("data") or {}
                if kind == "HEARTBEAT":
                    reply = {"type": "HEARTBEAT", "data": {"timestamp": now_ms()}}
                    if request_id is not None:
                        reply["requestId"] = request_id
                    await ws.send(json.dumps(reply))
                elif kind == "JOIN_ENVIRONMENT":
                    wallet = data["userId"]
                    room = self.rooms[data["environmentId"]]
                    room.add(ws)
                    joined.add(data["environmentId"])
                    state = {"id": data["environmentId"], "participants": len(room)}
                    await ws.send(
                        json.dumps(
                            {"type": "ENVIRONMENT_STATE", "requestId": request_id, "data": state}
                        )
                    )
                elif kind == "CHAT_MESSAGE":
                    await self.chat(ws, wallet, data, request_id)
                elif kind == "VIRTUAL_TRADE":
                    await self.trade(ws, wallet, data, request_id)
                else:
                    await ws.send(error("INVALID_MESSAGE", "unknown type", request_id))
        except websockets.ConnectionClosed:
            pass
        finally:
            for environment_id in joined:
                self.rooms[environment_id].discard(ws)

    async def chat(
        self, ws: ServerConnection, wallet: str, data: dict[str, Any], request_id: str | None
    ) -> None:
        environment_id = data["environmentId"]
        self.chat_sequence[environment_id] += 1
        line = {
            "userId": wallet,
            "message": str(data["message"]).strip(),
            "timestamp": now_ms(),
            "environmentId": environment_id,
            "sequence": self.chat_sequence[environment_id],
        }
        others = self.rooms[environment_id] - {ws}
        broadcast(others, json.dumps({"type": "CHAT_MESSAGE", "data": line}))
        await ws.send(json.dumps({"type": "CHAT_MESSAGE", "requestId": request_id, "data": line}))

    async def trade(
        self, ws: ServerConnection, wallet: str, data: dict[str, Any], request_id: str | None
    ) -> None:
        environment_id = data["environmentId"]
        amount, is_buy = int(data["amount"]), bool(data["isBuy"])
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(ENVIRONMENT, (environment_id,))
            env = await cursor.fetchone()
            cursor = await conn.execute(POSITION, (environment_id, wallet))
            position = await cursor.fetchone()
            if env is None or position is None:
                await ws.send(error("UNAUTHORIZED", "join first", request_id))
                return
            vs, vt, rs, rt, protocol_bps, creator_bps, sequence = env
            position_id, sol_balance, token_balance = position
            if amount > (sol_balance if is_buy else token_balance):
                await ws.send(error("INSUFFICIENT_BALANCE", "not enough", request_id))
                return
            try:
                fill = Curve(vs, vt, rs, rt, protocol_bps, creator_bps).trade(
                    amount=amount, is_buy=is_buy
                )
            except CurveComplete:
                await ws.send(error("ENVIRONMENT_CLOSED", "the curve is complete", request_id))
                return
            except CurveError:
                await ws.send(error("INVALID_MESSAGE", "amount too small", request_id))
                return
            after, sequence = fill.curve, sequence + 1
            await conn.execute(
                UPDATE_ENVIRONMENT,
                (
                    after.virtual_sol,
                    after.virtual_token,
                    after.real_sol,
                    after.real_token,
                    sequence,
                    environment_id,
                ),
            )
            sol_balance += fill.sol_delta
            token_balance += fill.token_delta
            await conn.execute(UPDATE_POSITION, (sol_balance, token_balance, position_id))
            cursor = await conn.execute(
                INSERT_TRADE,
                (
                    environment_id,
                    wallet,
                    is_buy,
                    amount,
                    fill.sol_amount,
                    fill.token_amount,
                    fill.protocol_fee,
                    fill.creator_fee,
                    sequence,
                    after.virtual_sol,
                    after.virtual_token,
                ),
            )
            row = await cursor.fetchone()
            assert row is not None
        # Committed: now broadcast, as FunPump does after commit.
        event = {
            "environmentId": environment_id,
            "sequence": sequence,
            "trade": {
                "id": row[0],
                "sequence": sequence,
                "userId": wallet,
                "amount": str(amount),
                "price": format_price(average_price(fill.sol_amount, fill.token_amount)),
                "timestamp": now_ms(),
                "isBuy": is_buy,
                "solAmount": str(fill.sol_amount),
                "tokenAmount": str(fill.token_amount),
                "fee": str(fill.fee),
            },
            "newReserves": {"sol": str(after.virtual_sol), "token": str(after.virtual_token)},
        }
        others = self.rooms[environment_id] - {ws}
        broadcast(others, json.dumps({"type": "VIRTUAL_TRADE_EXECUTED", "data": event}))
        own = {**event, "balance": {"sol": str(sol_balance), "token": str(token_balance)}}
        await ws.send(
            json.dumps({"type": "VIRTUAL_TRADE_EXECUTED", "requestId": request_id, "data": own})
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True, help="a PostgreSQL URL")
    parser.add_argument("--pool", type=int, default=10, help="database connections")
    args = parser.parse_args()
    pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        args.database, min_size=args.pool, max_size=args.pool, open=False
    )
    await pool.open(wait=True)
    baseline = Baseline(pool)
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    # Like daphne under FunPump: no compression, a generous frame limit.
    async with serve(
        baseline.handle, args.host, args.port, compression=None, max_size=2**20, max_queue=None
    ):
        await stop
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
