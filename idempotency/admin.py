from __future__ import annotations

from django.contrib import admin

from idempotency.models import Receipt
from kernel.admin import LedgerAdmin


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
