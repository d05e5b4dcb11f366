from __future__ import annotations

from django.contrib import admin

from kernel.admin import LedgerAdmin
from trading import curve
from trading.models import Trade


@admin.register(Trade)
class TradeAdmin(LedgerAdmin):
    """The trade ledger: read-only."""

    list_display = (
        "sequence",
        "environment",
        "wallet",
        "is_buy",
        "amount",
        "sol_amount",
        "token_amount",
        "protocol_fee",
        "creator_fee",
        "price_display",
        "created_at",
    )
    list_filter = ("is_buy", "environment", "created_at")
    search_fields = ("wallet", "environment__id", "environment__name")
    list_select_related = ("environment",)
    date_hierarchy = "created_at"

    @admin.display(description="price (SOL/token)")
    def price_display(self, obj: Trade) -> str:
        return curve.format_price(obj.price)
