from __future__ import annotations

from django.db import models
from django.utils import timezone


class Receipt(models.Model):
    """A mutating request that ran: its key, what it asked and what it was answered.

    Written in the same transaction as the trade, chat line, claim or launch it records, so a
    request has a receipt exactly when its effect committed. The unique key makes a repeat of
    the same ``requestId`` (from any connection or server process) fail to insert, so it can
    never run twice; the stored answer is what the repeat gets instead.
    """

    wallet = models.CharField(max_length=44)
    request_id = models.CharField(max_length=64)
    item = models.PositiveSmallIntegerField(
        default=0, help_text="Position in a batch that shares the requestId (0: a single message)."
    )
    kind = models.CharField(max_length=32, help_text="The request's message type.")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of its parameters.")
    answer = models.JSONField(default=dict, help_text="The data of the original answer.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["wallet", "request_id", "item"], name="one_receipt_per_request"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.request_id!r} by {self.wallet}"
