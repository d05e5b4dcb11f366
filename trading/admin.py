from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from trading import curve
from trading.models import Trade


@admin.register(Trade)
class TradeAdmin(admin.ModelAdmin[Trade]):
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
