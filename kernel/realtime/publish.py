"""What the apps publish: after commit, from the committing thread, to every process.

A rolled-back transaction announces nothing. In a server process the hub takes it over on its
event loop; elsewhere (a management command, a WSGI worker) it goes to the other processes
through the shared layer.
"""

from __future__ import annotations

from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from kernel.realtime.fanout import Event
from kernel.realtime.feeds import market_key
from kernel.realtime.hub import announce, fanout_message, layer_group, touch_message


def publish_on_commit(event: Event) -> None:
    """Announce ``event`` once the current transaction commits; a rollback announces nothing."""
    transaction.on_commit(lambda: _dispatch(event))


def _dispatch(event: Event) -> None:
    announce(event.environment_id, fanout_message(event), lambda hub: hub.submit(event))


def touch_on_commit(key: str) -> None:
    """After commit, tell every process that ``key``'s feed subscribers should get a fresh
    update."""
    transaction.on_commit(lambda: _touch(key))


def _touch(key: str) -> None:
    announce(key, touch_message(key), lambda hub: hub.touch_everywhere(key))


async def publish_market(mint: str, data: dict[str, Any]) -> None:
    """Send a market ``PRICE_UPDATE`` to every server process with subscribers of ``mint``."""
    layer = get_channel_layer()
    if layer is None:
        return
    key = market_key(mint)
    await layer.group_send(layer_group(key), {"type": "market", "environment": key, "data": data})
