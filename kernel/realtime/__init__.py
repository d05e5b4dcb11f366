"""Real-time delivery: published after commit, serialised once, sent once per server process.

Each server process runs one :class:`Hub` (:mod:`kernel.realtime.hub`, the channel layer's I/O).
What it delivers, by job:

- :mod:`kernel.realtime.fanout`: an environment's events to its members, in sequence order,
  with gaps read back from the database, and the sender's own copy in the public one's place.
- :mod:`kernel.realtime.feeds`: coalesced feeds (prices, rewards, a real mint's market price),
  at most one update per window, computed once for every subscriber.
- :mod:`kernel.realtime.signals`: the signal bus (voice sessions' results and controls).
- :mod:`kernel.realtime.publish`: what the apps publish after commit.

The kernel imports no app: the apps register where missed events are read back
(:func:`register_history`).
"""

from kernel.realtime.fanout import Event, History
from kernel.realtime.feeds import market_key, rewards_key
from kernel.realtime.hub import PROCESS_ID, Hub, register_history
from kernel.realtime.publish import publish_market, publish_on_commit, touch_on_commit
from kernel.realtime.signals import signal, signal_on_commit, voice_key

__all__ = [
    "PROCESS_ID",
    "Event",
    "History",
    "Hub",
    "market_key",
    "publish_market",
    "publish_on_commit",
    "register_history",
    "rewards_key",
    "signal",
    "signal_on_commit",
    "touch_on_commit",
    "voice_key",
]
