"""Operators see voice sessions (who, when, language, how many commands) and can end them."""

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from tests.conftest import Wallet
from voice.models import VoiceSession
from voice.services import voice_command_record, voice_session_start
from voice.speech.intents import parse_command

pytestmark = pytest.mark.django_db(transaction=True)


def test_sessions_and_what_they_heard_are_listed_read_only(admin_client):
    alice = Wallet()
    started = voice_session_start(wallet=alice.address, language="en-US", environment_id=None)
    for text in ("buy two sol", "what is the price", "hello there"):
        voice_command_record(
            session_id=started.id,
            text=text,
            command=parse_command(text),
            seconds=1.2,
            source="socket",
        )
    session = VoiceSession.objects.get(pk=started.id)
    assert (session.utterances, session.commands) == (3, 2)

    listing = admin_client.get(reverse("admin:voice_voicesession_changelist")).content.decode()
    assert alice.address in listing and "en-US" in listing
    # The admin quotes ids in its links ("vs_42…" holds "_42", which it would read as an escape).
    change_url = reverse("admin:voice_voicesession_change", args=[quote(started.id)])
    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert "what is the price" in page.content.decode()
    assert "MARKET_ANALYSIS" in page.content.decode()
    heard = admin_client.get(reverse("admin:voice_voicecommand_changelist") + "?intent=UNKNOWN")
    assert "hello there" in heard.content.decode()
    assert admin_client.get(reverse("admin:voice_voicesession_add")).status_code == 403


def test_an_operator_can_end_open_sessions(admin_client):
    alice = Wallet()
    started = voice_session_start(wallet=alice.address, language="en-US", environment_id=None)
    response = admin_client.post(
        reverse("admin:voice_voicesession_changelist"),
        {"action": "end_sessions", "_selected_action": [started.id]},
        follow=True,
    )
    assert "Ended 1 session(s)." in response.content.decode()
    session = VoiceSession.objects.get(pk=started.id)
    assert session.ended_at is not None and session.end_reason == "admin"
