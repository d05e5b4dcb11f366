"""The signal bus: a payload for whoever listens on a key, in this process or another one.

Listeners register with :meth:`kernel.realtime.Hub.listen` (a voice session's socket listens on
its :func:`voice_key`); a speech worker or the LiveKit agent, in another process, signals that
key. Signals are not stored: one sent while the layer is down is lost.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from kernel.realtime.hub import Hub, announce, layer_group, signal_message


def voice_key(session_id: str) -> str:
    """The signal key of a voice session: its recognition results and control signals."""
    return f"_voice.{session_id}"


def signal_on_commit(key: str, payload: dict[str, Any]) -> None:
    """After commit, hand ``payload`` to whoever listens on ``key``, in any process."""
    transaction.on_commit(
        lambda: announce(
            key,
            signal_message(key, payload),
            lambda hub: hub.signal_everywhere(key, payload),
        )
    )


async def signal(key: str, payload: dict[str, Any]) -> None:
    """Hand ``payload`` to whoever listens on ``key``, in this process or another one."""
    hub = Hub.instance
    if hub is not None and hub.loop is asyncio.get_running_loop():
        hub.signal_everywhere(key, payload)
        return
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(layer_group(key), signal_message(key, payload))
