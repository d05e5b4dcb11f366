"""The kernel: what every app builds on and that imports no app.

Realtime delivery (the hub), database helpers, rate limits, resource caps, the Redis breaker,
metrics, graceful shutdown and the shared admin and API pieces.
"""
