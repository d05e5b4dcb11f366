from __future__ import annotations

from django.contrib import admin

from kernel.admin import (
    LedgerAdmin,
    environment_column,
    money_column,
    money_detail,
    short_price,
    sol,
    tokens,
    wallet_column,
)
from trading import curve
from trading.models import MarketEvent, Trade


@admin.register(Trade)
class TradeAdmin(LedgerAdmin):
    """The trade ledger: read-only. Amounts in SOL and tokens; the detail page adds them next
    to the stored integers."""

    list_display = (
        "sequence",
        "environment_shown",
        "wallet_shown",
        "side",
        "sol_shown",
        "tokens_shown",
        "fee_shown",
        "price_shown",
        "created_at",
    )
    list_filter = ("is_buy", "phase", "environment", "created_at")
    search_fields = ("wallet", "environment__id", "environment__name")
    list_select_related = ("environment",)
    date_hierarchy = "created_at"
    readonly_fields = (
        "amount_detail",
        "sol_amount_detail",
        "token_amount_detail",
        "protocol_fee_detail",
        "creator_fee_detail",
        "lp_fee_detail",
        "price_display",
    )

    environment_shown = environment_column
    wallet_shown = wallet_column
    sol_shown = money_column("sol_amount", "SOL")
    tokens_shown = money_column("token_amount", "tokens", "tokens")
    sol_amount_detail = money_detail("sol_amount", "SOL amount")
    token_amount_detail = money_detail("token_amount", "token amount", "tokens")
    protocol_fee_detail = money_detail("protocol_fee", "protocol fee")
    creator_fee_detail = money_detail("creator_fee", "creator fee")
    lp_fee_detail = money_detail("lp_fee", "LP fee")

    @admin.display(description="side", ordering="is_buy")
    def side(self, obj: Trade) -> str:
        return "buy" if obj.is_buy else "sell"

    @admin.display(description="fees")
    def fee_shown(self, obj: Trade) -> str:
        return sol(obj.fee)

    @admin.display(description="requested")
    def amount_detail(self, obj: Trade) -> str:
        shown = sol(obj.amount) if obj.is_buy else tokens(obj.amount)
        return f"{shown} ({obj.amount} {'lamports' if obj.is_buy else 'raw units'})"

    @admin.display(description="price (SOL/token)")
    def price_shown(self, obj: Trade) -> str:
        return short_price(obj.price)

    @admin.display(description="price (SOL/token)")
    def price_display(self, obj: Trade) -> str:
        return curve.format_price(obj.price)


@admin.register(MarketEvent)
class MarketEventAdmin(LedgerAdmin):
    """Graduations and new rounds, as broadcast: read-only."""

    list_display = ("sequence", "environment", "round", "kind", "created_at")
    list_filter = ("kind", "environment")
    search_fields = ("environment__id", "environment__name")
    list_select_related = ("environment",)
