from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from kernel.realtime import publish_market
from trading.market import market_interest, market_snapshot_store, run_feed


class Command(BaseCommand):
    help = (
        "Follow a pump.fun trade stream (PumpPortal's data WebSocket) for the mints that have "
        "price subscribers, and publish their market prices to every server process. Needs "
        "REDIS_URL. Runs until stopped; reconnects by itself."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url",
            default=settings.FUNPUMP_MARKET_FEED_URL,
            help="Trade stream URL (FUNPUMP_MARKET_FEED_URL).",
        )
        parser.add_argument(
            "--mint",
            action="append",
            default=[],
            help="Also follow this mint, subscribers or not (repeatable).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            raise CommandError(
                "the market feed reaches the server processes through Redis: set REDIS_URL"
            )
        url = options["url"]
        if not url:
            raise CommandError("set FUNPUMP_MARKET_FEED_URL or pass --url")
        if settings.FUNPUMP_MARKET_FEED_API_KEY:
            separator = "&" if "?" in url else "?"
            url += separator + urlencode({"api-key": settings.FUNPUMP_MARKET_FEED_API_KEY})
        always = set(options["mint"])
        self.stdout.write(
            f"Following the market feed for {len(always)} fixed mint(s) and every subscribed one."
        )

        async def wanted() -> set[str]:
            return always | await asyncio.to_thread(market_interest)

        async def publish(update: dict[str, Any]) -> None:
            await market_snapshot_store(update)
            await publish_market(update["mintAddress"], update)

        try:
            asyncio.run(run_feed(url, wanted=wanted, publish=publish))
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")
