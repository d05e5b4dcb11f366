from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from voice.agent import VoiceAgent
from voice.livekit import VoiceUnavailable, livekit_secret
from voice.speech.recogniser import recogniser


class Command(BaseCommand):
    help = (
        "Join the LiveKit room of every open voice session, listen to the user's microphone and "
        "send the transcripts, commands and answers to the user's socket. Needs REDIS_URL (the "
        "socket servers are other processes) and the LIVEKIT_* settings. Runs until stopped "
        "(SIGINT or SIGTERM); rejoins a failed room by itself."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--poll",
            type=float,
            default=1.0,
            help="Seconds between looks for started and ended sessions (default 1).",
        )
        parser.add_argument(
            "--max-sessions",
            type=int,
            default=100,
            help="Most sessions listened to at once; the rest wait for a slot (default 100).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            raise CommandError(
                "the voice agent reaches the server processes through Redis: set REDIS_URL"
            )
        if not settings.LIVEKIT_URL:
            raise CommandError("set LIVEKIT_URL")
        try:
            livekit_secret()
        except VoiceUnavailable as exc:
            raise CommandError(f"voice is not configured: {exc.reason}") from exc
        poll, max_sessions = options["poll"], options["max_sessions"]
        if poll <= 0:
            raise CommandError("--poll must be positive")
        if max_sessions < 1:
            raise CommandError("--max-sessions must be at least 1")
        self.stdout.write(
            f"Voice agent on {settings.LIVEKIT_URL}: up to {max_sessions} session(s), "
            f"looking for sessions every {poll:g}s."
        )
        # Ready before the first session: a model built or loaded inside the agent's event loop
        # would hold up every room's audio meanwhile (voice/speech/recogniser.py).
        self.stdout.write("Getting the speech recogniser ready...")
        recogniser.wait()
        asyncio.run(serve(VoiceAgent(poll=poll, max_sessions=max_sessions)))
        self.stdout.write("Stopped.")


async def serve(agent: VoiceAgent) -> None:
    """Run ``agent`` until SIGINT or SIGTERM, then leave every room."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no Unix signals
            pass
    try:
        await agent.run(stop)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
