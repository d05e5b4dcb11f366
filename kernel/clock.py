"""Time as the wire contract writes it: integer milliseconds since the Unix epoch."""

from __future__ import annotations

from datetime import datetime


def millis(moment: datetime) -> int:
    """A timestamp as integer milliseconds since the Unix epoch."""
    return int(moment.timestamp() * 1000)
