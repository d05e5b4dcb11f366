"""Settling rewards: each trade's creator fee to its launcher, a share of its protocol fee back
to its trader at the trader's tier, each trade exactly once, in batches of one transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

import protocol
from environments.models import Environment
from idempotency.models import Receipt
from idempotency.services import receipt_answer, request_key, run_once
from kernel.realtime import rewards_key, touch_on_commit
from protocol.errors import DomainError, ErrorCode
from rewards.models import Claim, RewardAccount, RewardEntry, RewardTier, Settlement
from trading.curve import BPS
from trading.models import Trade


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    rate_bps: int


def tier_of(*, launches: int, volume: int, tiers: list[RewardTier]) -> Tier:
    """The highest tier whose requirements are met (tiers listed lowest first)."""
    reached = Tier("", 0)
    for tier in tiers:
        met = launches >= tier.min_launches and volume >= tier.min_volume
        if met and tier.rate_bps >= reached.rate_bps:
            reached = Tier(tier.name, tier.rate_bps)
    return reached


def wallet_tiers(wallets: set[str], tiers: list[RewardTier]) -> dict[str, Tier]:
    """Each wallet's tier now: its launches and its traded volume."""
    launches = dict(
        Environment.objects.filter(launched_by__in=wallets)
        .values_list("launched_by")
        .annotate(total=Count("id"))
    )
    volumes = dict(
        Trade.objects.filter(wallet__in=wallets)
        .values_list("wallet")
        .annotate(total=Sum("sol_amount"))
    )
    return {
        wallet: tier_of(
            launches=launches.get(wallet, 0), volume=int(volumes.get(wallet) or 0), tiers=tiers
        )
        for wallet in wallets
    }


@dataclass(slots=True)
class SettlementSummary:
    trades: int = 0
    entries: int = 0
    to_launchers: int = 0
    to_traders: int = 0
    wallets: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return self.to_launchers + self.to_traders


def _entries_for(
    trades: list[Trade], launchers: dict[str, str], tiers: dict[str, Tier]
) -> list[RewardEntry]:
    entries = []
    for trade in trades:
        launcher = launchers.get(trade.environment_id, "")
        if launcher and trade.creator_fee:
            entries.append(
                RewardEntry(
                    trade=trade,
                    wallet=launcher,
                    kind=RewardEntry.Kind.CREATOR_FEE,
                    amount=trade.creator_fee,
                )
            )
        tier = tiers[trade.wallet]
        rebate = trade.protocol_fee * tier.rate_bps // BPS
        if rebate:
            entries.append(
                RewardEntry(
                    trade=trade,
                    wallet=trade.wallet,
                    kind=RewardEntry.Kind.TRADER_REBATE,
                    amount=rebate,
                    tier=tier.name,
                    rate_bps=tier.rate_bps,
                )
            )
    return entries


def settle_rewards(
    *,
    run_by: str,
    batch_size: int = 1000,
    dry_run: bool = False,
    progress: Callable[[SettlementSummary], None] | None = None,
) -> SettlementSummary:
    """Settle every trade not yet settled, ``batch_size`` trades per transaction.

    Trades are locked with SKIP LOCKED, so two runs at once divide the work and never settle a
    trade twice (the entries' unique constraint backs that up). A trader's tier is the one it
    holds when this run first meets it. ``dry_run`` computes the same summary and writes nothing.
    """
    summary = SettlementSummary()
    tier_table = list(RewardTier.objects.order_by("min_launches", "min_volume"))
    tiers: dict[str, Tier] = {}
    settlement = None if dry_run else Settlement.objects.create(run_by=run_by)
    after = 0
    while True:
        with transaction.atomic():
            unsettled = Trade.objects.filter(settled_at__isnull=True, id__gt=after).order_by("id")
            if not dry_run:
                unsettled = unsettled.select_for_update(skip_locked=True)
            trades = list(unsettled[:batch_size])
            if not trades:
                break
            after = trades[-1].id
            new_wallets = {trade.wallet for trade in trades} - tiers.keys()
            tiers.update(wallet_tiers(new_wallets, tier_table))
            launchers = dict(
                Environment.objects.filter(
                    pk__in={trade.environment_id for trade in trades}
                ).values_list("id", "launched_by")
            )
            entries = _entries_for(trades, launchers, tiers)
            earned: dict[str, int] = defaultdict(int)
            for entry in entries:
                earned[entry.wallet] += entry.amount
                if entry.kind == RewardEntry.Kind.CREATOR_FEE:
                    summary.to_launchers += entry.amount
                else:
                    summary.to_traders += entry.amount
            summary.trades += len(trades)
            summary.entries += len(entries)
            summary.wallets |= earned.keys()
            if settlement is not None:
                for entry in entries:
                    entry.settlement = settlement
                RewardEntry.objects.bulk_create(entries)
                _credit(earned)
                Trade.objects.filter(pk__in=[trade.pk for trade in trades]).update(
                    settled_at=timezone.now()
                )
        if progress is not None:
            progress(summary)
    if settlement is not None:
        for wallet in summary.wallets:  # once per run, not per batch: subscribers refresh
            touch_on_commit(rewards_key(wallet))
        settlement.trades_settled = summary.trades
        settlement.total_paid = summary.total
        settlement.finished_at = timezone.now()
        settlement.save(update_fields=["trades_settled", "total_paid", "finished_at"])
    return summary


def _credit(earned: dict[str, int]) -> None:
    """Add to the wallets' unclaimed rewards, locking their accounts in wallet order."""
    RewardAccount.objects.bulk_create(
        [RewardAccount(wallet=wallet) for wallet in earned], ignore_conflicts=True
    )
    accounts = (
        RewardAccount.objects.select_for_update().filter(wallet__in=earned).order_by("wallet")
    )
    now = timezone.now()
    locked = list(accounts)
    for account in locked:
        account.unclaimed += earned[account.wallet]
        account.updated_at = now
    RewardAccount.objects.bulk_update(locked, ["unclaimed", "updated_at"], batch_size=1000)


@dataclass(frozen=True, slots=True)
class ClaimResult:
    claim: Claim
    answer: protocol.RewardUpdate  # the wallet's REWARD_UPDATE right after the claim


def claim_rewards(
    *, wallet: str, request_id: str | None = None, request_item: int = 0
) -> ClaimResult:
    """Move the wallet's unclaimed rewards into a pending payout record, in one transaction.

    The result carries the wallet's ``REWARD_UPDATE`` as the claim left it. With ``request_id``
    the claim runs at most once: a repeat raises :class:`idempotency.services.Replay` carrying
    that first ``REWARD_UPDATE``.
    """
    from rewards.selectors import reward_view  # the selectors build on this module

    key = request_key(
        wallet=wallet, request_id=request_id, item=request_item, kind="CLAIM_REWARDS", params={}
    )

    def claim(receipt: Receipt | None) -> ClaimResult:
        account = RewardAccount.objects.select_for_update().filter(wallet=wallet).first()
        if account is None or account.unclaimed == 0:
            raise DomainError(ErrorCode.INSUFFICIENT_BALANCE, "no unclaimed rewards")
        record = Claim.objects.create(wallet=wallet, amount=account.unclaimed)
        account.claimed += account.unclaimed
        account.unclaimed = 0
        account.save(update_fields=["claimed", "unclaimed", "updated_at"])
        touch_on_commit(rewards_key(wallet))
        answer = reward_view(wallet)
        receipt_answer(receipt, protocol.dump(answer))
        return ClaimResult(claim=record, answer=answer)

    return run_once(key, claim)


def claims_mark_paid(*, claim_ids: list[int]) -> int:
    """Staff paid these claims out: pending ones become paid; returns how many changed."""
    with transaction.atomic():
        claims = list(
            Claim.objects.select_for_update().filter(pk__in=claim_ids, status=Claim.Status.PENDING)
        )
        now = timezone.now()
        for claim in claims:
            claim.status = Claim.Status.PAID
            claim.paid_at = now
            claim.save(update_fields=["status", "paid_at"])
    return len(claims)
