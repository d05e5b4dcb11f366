from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from rewards.models import RewardAccount, RewardEntry, RewardTier, Settlement


@admin.register(RewardTier)
class RewardTierAdmin(admin.ModelAdmin[RewardTier]):
    list_display = ("name", "min_launches", "min_volume", "rate_bps")
    ordering = ("min_launches", "min_volume")


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    """Ledgers: written only by the settlement and claim services."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RewardAccount)
class RewardAccountAdmin(ReadOnlyAdmin):
    list_display = ("wallet", "unclaimed", "claimed", "updated_at")
    search_fields = ("wallet",)


@admin.register(Settlement)
class SettlementAdmin(ReadOnlyAdmin):
    list_display = ("id", "started_at", "finished_at", "run_by", "trades_settled", "total_paid")
    list_filter = ("started_at",)
    search_fields = ("run_by",)


@admin.register(RewardEntry)
class RewardEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "wallet", "kind", "amount", "tier", "rate_bps", "trade", "settlement")
    list_filter = ("kind", "tier")
    search_fields = ("wallet", "trade__environment__id")
    list_select_related = ("trade", "settlement")
