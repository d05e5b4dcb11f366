"""Admin pieces shared by the apps."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.http import HttpRequest


class LedgerAdmin(admin.ModelAdmin[Any]):
    """A ledger in the admin: visible and searchable, written only by the services."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


LAMPORTS_DECIMALS = 9  # 1 SOL = 10^9 lamports
TOKEN_DECIMALS = 6  # pump.fun tokens: 1 token = 10^6 raw units


def decimal_amount(raw: int | None, decimals: int, unit: str) -> str:
    """``raw`` base units as a decimal in ``unit``, exactly: thousands separated, trailing
    zeros of the fraction dropped ("85.000000001 SOL", "206,900,000 tokens"); "-" for None."""
    if raw is None:
        return "-"
    sign = "-" if raw < 0 else ""
    whole, fraction = divmod(abs(raw), 10**decimals)
    digits = f"{fraction:0{decimals}d}".rstrip("0")
    return f"{sign}{whole:,}{'.' + digits if digits else ''} {unit}"


def sol(lamports: int | None) -> str:
    """Lamports shown in SOL (exact)."""
    return decimal_amount(lamports, LAMPORTS_DECIMALS, "SOL")


def tokens(raw: int | None) -> str:
    """Raw token units shown in tokens (exact)."""
    return decimal_amount(raw, TOKEN_DECIMALS, "tokens")


def with_raw(shown: str, raw: int | None, unit: str) -> str:
    """A detail page's value: the readable amount and the stored integer ("85 SOL
    (85000000000 lamports)")."""
    return shown if raw is None else f"{shown} ({raw} {unit})"


_MONEY = {"sol": (sol, "lamports"), "tokens": (tokens, "raw units")}


def money_column(field: str, label: str, kind: str = "sol") -> Callable[[Any, Any], str]:
    """A list column (a ModelAdmin attribute) showing the integer ``field`` in SOL or tokens."""
    formatter = _MONEY[kind][0]

    @admin.display(description=label, ordering=field)
    def column(admin_: Any, obj: Any) -> str:
        return formatter(getattr(obj, field))

    return column


def money_detail(field: str, label: str, kind: str = "sol") -> Callable[[Any, Any], str]:
    """A detail-page field (for ``readonly_fields``): SOL or tokens and the stored integer."""
    formatter, unit = _MONEY[kind]

    @admin.display(description=label)
    def detail(admin_: Any, obj: Any) -> str:
        raw = getattr(obj, field)
        return with_raw(formatter(raw), raw, unit)

    return detail


def short_wallet(wallet: str) -> str:
    """A wallet for a list column: its first and last four characters (the whole address is on
    the detail page and found by the search box)."""
    return wallet if len(wallet) <= 12 else f"{wallet[:4]}…{wallet[-4:]}"


@admin.display(description="wallet", ordering="wallet")
def wallet_column(admin_: Any, obj: Any) -> str:
    """A list column (a ModelAdmin attribute) with the shortened wallet."""
    return short_wallet(obj.wallet)


@admin.display(description="environment", ordering="environment")
def environment_column(admin_: Any, obj: Any) -> str:
    """A list column with the environment's id (no name: it keeps the list narrow)."""
    return str(obj.environment_id)


def short_price(price: Decimal) -> str:
    """A price for a list column: 6 significant digits, never in exponent form (the exact
    price is on the detail page)."""
    if not price:
        return "0"
    return format(price.quantize(Decimal(1).scaleb(price.adjusted() - 5)), "f")
