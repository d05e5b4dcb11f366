"""The server's per-socket inbox (funpump.serve.Inbox): daphne's queue for the application."""

from __future__ import annotations

import asyncio

from funpump.serve import Inbox


async def test_messages_come_out_in_the_order_they_went_in() -> None:
    inbox = Inbox()
    for number in range(3):
        inbox.put_nowait({"n": number})
    assert inbox.qsize() == 3
    assert [(await inbox.get())["n"] for _ in range(3)] == [0, 1, 2]
    assert inbox.qsize() == 0


async def test_a_waiting_reader_gets_the_next_message() -> None:
    inbox = Inbox()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait({"type": "websocket.connect"})
    assert await asyncio.wait_for(reader, 1) == {"type": "websocket.connect"}


async def test_a_cancelled_wait_loses_nothing() -> None:
    inbox = Inbox()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    inbox.put_nowait({"n": 1})
    assert await asyncio.wait_for(inbox.get(), 1) == {"n": 1}
