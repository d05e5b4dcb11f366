"""WebSocket URL routing: one endpoint, ``/ws``."""

from django.urls import path

from gateway.consumers import RoomConsumer

websocket_urlpatterns = [path("ws", RoomConsumer.as_asgi())]
