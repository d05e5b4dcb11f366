"""End to end: speech recognised by a worker process (``FUNPUMP_SPEECH=worker``).

daphne forwards the session's audio over Redis to ``python manage.py runworker voice-speech``,
which answers through the signal bus; the web process never loads the speech models.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings
from nacl.signing import SigningKey

from environments.services import environment_create
from gateway.client import FunPumpClient, sign_in, wallet_of
from tests.e2e.conftest import ROOT, database_url
from tests.e2e.test_voice_startup import voice_session
from tests.voice.speech import silence, speak
from voice.models import VoiceCommand

pytestmark = [pytest.mark.asyncio, pytest.mark.redis]

SPEECH_LIBRARIES = ("onnxruntime", "pocketsphinx")


@pytest.fixture
def speech_worker(transactional_db: None, redis_url: str, tmp_path: Path) -> Iterator[Path]:
    """``python manage.py runworker voice-speech`` on the test database and Redis; its log."""
    log = tmp_path / "speech-worker.log"
    env = {
        **os.environ,
        "DJANGO_DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "funpump.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "FUNPUMP_REDIS_PREFIX": settings.FUNPUMP_REDIS_PREFIX,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "FUNPUMP_SPEECH": "worker",
    }
    command = [sys.executable, "manage.py", "runworker", "voice-speech"]
    with log.open("wb") as sink:
        worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
    yield log
    worker.terminate()
    try:
        worker.wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker.kill()


def loaded_speech_libraries(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in SPEECH_LIBRARIES if name in maps}


async def test_a_worker_recognises_what_the_socket_hears(daphne_server, speech_worker):
    environment = await sync_to_async(environment_create)(name="Worker room")
    server = await sync_to_async(daphne_server)(FUNPUMP_SPEECH="worker")
    key = SigningKey.generate()
    wallet = wallet_of(key)
    client = FunPumpClient(server.ws, token=await sign_in(server.http, key), origin=server.http)
    await client.connect()
    heard: list[dict[str, Any]] = []
    for kind in ("VOICE_TRANSCRIPTION", "VOICE_COMMAND", "VOICE_RESPONSE", "ERROR"):
        client.on(kind, heard.append)
    assert (await client.join(environment.id, wallet))["type"] == "ENVIRONMENT_STATE"
    # Refused with RATE_LIMITED and retryAfterMs until the worker's recogniser is ready.
    ready = await voice_session(client, wallet)
    assert ready["type"] == "VOICE_SESSION_READY", (ready, speech_worker.read_text()[-3000:])
    session_id = ready["data"]["sessionId"]

    await client.send_audio(silence(0.3) + speak("buy two sol") + silence(0.3))
    await client.send("VOICE_AUDIO_END", {"sessionId": session_id}, request_id="end")
    async with asyncio.timeout(30):
        while not (
            any(m.get("requestId") == "end" for m in heard)
            and any(m["type"] in ("VOICE_RESPONSE", "ERROR") for m in heard)
        ):
            await asyncio.sleep(0.02)
    told = next(i for i, m in enumerate(heard) if m["type"] in ("VOICE_RESPONSE", "ERROR"))
    final, command, response = heard[told - 2 : told + 1]
    assert final["data"] == {"text": "buy two sol", "isFinal": True, "sessionId": session_id}
    # VOICE_AUDIO_END is answered by that final, or by the same final again once it has come.
    [answer] = [m for m in heard if m.get("requestId") == "end"]
    assert answer["data"] == final["data"]
    assert command["type"] == "VOICE_COMMAND"
    assert command["data"]["intent"] == "EXECUTE_TRADE"
    assert command["data"]["parameters"] == {"isBuy": True, "amount": "2000000000"}
    assert response["type"] == "VOICE_RESPONSE"
    assert response["data"]["text"].startswith("Buy about")

    # The web process heard the session without the speech models.
    assert loaded_speech_libraries(server.process.pid) == set()

    await client.send("VOICE_SESSION_END", {"sessionId": session_id})
    await client.close()
    intents = await sync_to_async(list)(
        VoiceCommand.objects.filter(session_id=session_id).values_list("intent", flat=True)
    )
    assert intents == ["EXECUTE_TRADE"]
