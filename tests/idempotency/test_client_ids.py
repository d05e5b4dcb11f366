"""The Python client never reuses a requestId: a reused one would replay an old trade."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.client import FunPumpClient

pytestmark = pytest.mark.asyncio


async def first_ids(client: FunPumpClient, count: int) -> list[str]:
    sent: list[str] = []

    async def capture(message_type: str, data: Any, request_id: str | None) -> None:
        assert request_id is not None
        sent.append(request_id)
        raise ConnectionError("not really sent")

    client._send_frame = capture  # type: ignore[method-assign]
    for _ in range(count):
        with pytest.raises(ConnectionError):
            await client.request("HEARTBEAT", timeout=1)
    await asyncio.sleep(0)
    return sent


async def test_two_clients_of_one_wallet_use_different_request_ids():
    one = await first_ids(FunPumpClient("ws://127.0.0.1:1/ws", token="t"), 3)
    other = await first_ids(FunPumpClient("ws://127.0.0.1:1/ws", token="t"), 3)
    assert len(set(one)) == 3
    assert not set(one) & set(other)
    assert all(1 <= len(request_id) <= 64 for request_id in one + other)
