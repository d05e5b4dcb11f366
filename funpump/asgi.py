"""ASGI entry point: HTTP through Django, ``/ws`` through the gateway."""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "funpump.settings")
django_http = get_asgi_application()  # sets Django up before the consumer's imports
if settings.DEBUG:
    # Development only: in production a proxy serves STATIC_ROOT after collectstatic.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_http = ASGIStaticFilesHandler(django_http)

from channels.routing import ChannelNameRouter, ProtocolTypeRouter  # noqa: E402

from gateway.middleware import WebSocketEntry  # noqa: E402
from gateway.routing import websocket_routes  # noqa: E402
from voice.worker import CHANNEL as SPEECH_CHANNEL  # noqa: E402
from voice.worker import SpeechConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_http,
        "websocket": WebSocketEntry(websocket_routes),
        # Speech workers (FUNPUMP_SPEECH=worker): python manage.py runworker voice-speech
        "channel": ChannelNameRouter({SPEECH_CHANNEL: SpeechConsumer.as_asgi()}),
    }
)
