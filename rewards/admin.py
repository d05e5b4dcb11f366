from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from kernel.admin import LedgerAdmin, money_column, money_detail
from rewards.models import Claim, RewardAccount, RewardEntry, RewardTier, Settlement
from rewards.services import claims_mark_paid


@admin.register(RewardTier)
class RewardTierAdmin(admin.ModelAdmin[RewardTier]):
    list_display = ("name", "min_launches", "min_volume_shown", "rate_bps")
    ordering = ("min_launches", "min_volume")
    min_volume_shown = money_column("min_volume", "minimum volume")


@admin.register(RewardAccount)
class RewardAccountAdmin(LedgerAdmin):
    list_display = ("wallet", "unclaimed_shown", "claimed_shown", "updated_at", "how_earned")
    search_fields = ("wallet",)
    readonly_fields = ("unclaimed_detail", "claimed_detail")
    unclaimed_shown = money_column("unclaimed", "unclaimed")
    claimed_shown = money_column("claimed", "claimed")
    unclaimed_detail = money_detail("unclaimed", "unclaimed")
    claimed_detail = money_detail("claimed", "claimed")

    @admin.display(description="how it was earned")
    def how_earned(self, account: RewardAccount) -> str:
        url = reverse("admin:rewards_rewardentry_changelist") + f"?wallet={account.wallet}"
        return format_html('<a href="{}">ledger entries</a>', url)


@admin.register(Settlement)
class SettlementAdmin(LedgerAdmin):
    list_display = (
        "id",
        "started_at",
        "finished_at",
        "run_by",
        "trades_settled",
        "total_paid_shown",
    )
    list_filter = ("started_at",)
    search_fields = ("run_by",)
    readonly_fields = ("total_paid_detail",)
    total_paid_shown = money_column("total_paid", "total paid")
    total_paid_detail = money_detail("total_paid", "total paid")


@admin.register(RewardEntry)
class RewardEntryAdmin(LedgerAdmin):
    list_display = (
        "id",
        "wallet",
        "kind",
        "amount_shown",
        "tier",
        "rate_bps",
        "trade",
        "settlement",
    )
    list_filter = ("kind", "tier")
    search_fields = ("wallet", "trade__environment__id")
    list_select_related = ("trade", "settlement")
    readonly_fields = ("amount_detail",)
    amount_shown = money_column("amount", "amount")
    amount_detail = money_detail("amount", "amount")


@admin.register(Claim)
class ClaimAdmin(LedgerAdmin):
    list_display = ("id", "wallet", "amount_shown", "status", "created_at", "paid_at")
    list_filter = ("status", "created_at")
    search_fields = ("wallet",)
    readonly_fields = ("amount_detail",)
    amount_shown = money_column("amount", "amount")
    amount_detail = money_detail("amount", "amount")
    actions = ("mark_paid",)

    @admin.action(description="Mark selected claims paid")
    def mark_paid(self, request: HttpRequest, queryset: QuerySet[Claim]) -> None:
        changed = claims_mark_paid(claim_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Marked {changed} claim(s) paid.", messages.SUCCESS)
