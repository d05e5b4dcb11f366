"""WebSocket routing: one endpoint, ``/ws`` (gateway.middleware.WebSocketEntry routes by path)."""

from gateway.consumers import RoomConsumer

websocket_routes = {"ws": RoomConsumer.as_asgi()}
