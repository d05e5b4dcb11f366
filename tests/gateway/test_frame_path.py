"""What a frame costs on its way through the gateway: no thread hop, no leftover cycles."""

from __future__ import annotations

import gc
import json
import weakref
from typing import Any

import pytest
from asgiref.sync import SyncToAsync

from gateway.consumers import RoomConsumer
from tests.conftest import open_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def heartbeat(socket: Any, request_id: str) -> dict[str, Any]:
    await socket.send_to(text_data=json.dumps({"type": "HEARTBEAT", "requestId": request_id}))
    reply: dict[str, Any] = json.loads(await socket.receive_from(timeout=5))
    return reply


async def test_a_heartbeat_is_answered_without_a_thread_hop(monkeypatch):
    socket = await open_socket()
    await heartbeat(socket, "warm-up")
    hops: list[Any] = []
    original = SyncToAsync.__call__

    async def counted(self: SyncToAsync, *args: Any, **kwargs: Any) -> Any:
        hops.append(self.func)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    for number in range(20):
        reply = await heartbeat(socket, f"hb-{number}")
        assert (reply["type"], reply["requestId"]) == ("HEARTBEAT", f"hb-{number}")
    assert hops == []
    await socket.disconnect()


async def test_a_closed_connection_is_freed_without_the_garbage_collector(monkeypatch):
    consumers: list[weakref.ref[RoomConsumer]] = []
    connect = RoomConsumer.connect

    async def remembered(self: RoomConsumer) -> None:
        consumers.append(weakref.ref(self))
        await connect(self)

    monkeypatch.setattr(RoomConsumer, "connect", remembered)
    gc.collect()
    gc.disable()
    try:
        socket = await open_socket()
        await heartbeat(socket, "hb")
        await socket.disconnect()
        del socket
        assert len(consumers) == 1
        assert consumers[0]() is None  # freed by reference counting: no full GC to wait for
    finally:
        gc.enable()
