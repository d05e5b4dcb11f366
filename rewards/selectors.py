"""Read-side of rewards: what REWARD_UPDATE and GET /api/rewards/me show."""

from __future__ import annotations

from typing import Any

from django.db.models import Sum

import protocol
from environments.models import Environment
from kernel.clock import millis
from rewards.models import Claim, RewardAccount, RewardEntry, RewardTier
from rewards.services import tier_of
from trading.models import Trade


def reward_view(wallet: str) -> protocol.RewardUpdate:
    """``REWARD_UPDATE`` for ``wallet`` now: its tier, unclaimed rewards and totals."""
    launches = Environment.objects.filter(launched_by=wallet).count()
    volume = int(
        Trade.objects.filter(wallet=wallet).aggregate(total=Sum("sol_amount"))["total"] or 0
    )
    account = RewardAccount.objects.filter(wallet=wallet).first()
    tiers = list(RewardTier.objects.order_by("min_launches", "min_volume"))
    return protocol.RewardUpdate(
        tier=tier_of(launches=launches, volume=volume, tiers=tiers).name or None,
        unclaimedRewards=str(account.unclaimed if account else 0),
        totalLaunches=launches,
        totalVolume=str(volume),
    )


def reward_history(wallet: str, *, limit: int = 50) -> dict[str, Any]:
    """The latest ledger entries and claims of ``wallet``: how its rewards were earned."""
    entries = RewardEntry.objects.filter(wallet=wallet).order_by("-id")[:limit]
    claims = Claim.objects.filter(wallet=wallet).order_by("-id")[:limit]
    return {
        "entries": [
            {
                "tradeId": str(entry.trade_id),
                "kind": entry.kind,
                "amount": str(entry.amount),
                "tier": entry.tier or None,
                "rateBps": entry.rate_bps,
                "timestamp": millis(entry.created_at),
            }
            for entry in entries
        ],
        "claims": [
            {
                "id": str(claim.pk),
                "amount": str(claim.amount),
                "status": claim.status,
                "timestamp": millis(claim.created_at),
            }
            for claim in claims
        ],
    }
