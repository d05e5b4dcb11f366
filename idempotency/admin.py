from __future__ import annotations

from django.contrib import admin

from funpump.admin import LedgerAdmin
from idempotency.models import Receipt


@admin.register(Receipt)
class ReceiptAdmin(LedgerAdmin):
    list_display = ("id", "wallet", "request_id", "item", "kind", "created_at")
    list_filter = ("kind", "created_at")
    search_fields = ("wallet", "request_id")
    readonly_fields = (
        "wallet",
        "request_id",
        "item",
        "kind",
        "fingerprint",
        "answer",
        "created_at",
    )
