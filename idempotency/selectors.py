"""Read-side of idempotent requests."""

from __future__ import annotations

from datetime import datetime

from idempotency.models import Receipt


def receipt_find(*, wallet: str, request_id: str, item: int = 0) -> Receipt | None:
    """The receipt of a wallet's request, if it ran (whatever its age)."""
    return Receipt.objects.filter(wallet=wallet, request_id=request_id, item=item).first()


def receipts_expired(before: datetime) -> int:
    """How many receipts were created before ``before``."""
    return Receipt.objects.filter(created_at__lt=before).count()
