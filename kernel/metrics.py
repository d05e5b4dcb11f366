"""Prometheus metrics of one server process, served at ``/metrics``.

Each daphne process exposes its own; scrape every process (they share no state).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

CONNECTIONS = Gauge("funpump_connections", "Open WebSocket connections.")
MESSAGES = Counter("funpump_messages_total", "Client messages handled, by type.", ["type"])
ERRORS = Counter("funpump_errors_total", "ERROR frames sent, by code.", ["code"])
RATE_LIMITED = Counter("funpump_rate_limited_total", "Messages refused by the rate limit.")
TRADE_SECONDS = Histogram(
    "funpump_trade_seconds",
    "Time from a VIRTUAL_TRADE's arrival to its answer, seconds.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

VOICE_COMMANDS = Counter(
    "funpump_voice_commands_total", "Final voice transcripts, by recognised intent.", ["intent"]
)
VOICE_AUDIO_SECONDS = Counter("funpump_voice_audio_seconds_total", "Seconds of speech heard.")
VOICE_FINAL_SECONDS = Histogram(
    "funpump_voice_final_seconds",
    "Time to finish recognising an utterance once its end was found, seconds.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6),
)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics, in the clear only in debug mode or with ``FUNPUMP_METRICS_TOKEN``."""
    token = settings.FUNPUMP_METRICS_TOKEN
    if not settings.DEBUG:
        sent = request.headers.get("Authorization", "")
        if not token or sent != f"Bearer {token}":
            return HttpResponse(status=404)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
