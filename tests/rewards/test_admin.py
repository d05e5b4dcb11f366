"""Operators see tiers (editable) and the reward ledgers (read-only)."""

import pytest
from django.urls import reverse

from environments.services import environment_create, environment_join
from rewards.models import RewardEntry
from rewards.services import settle_rewards
from tests.conftest import Wallet
from trading.services import trade_execute

pytestmark = pytest.mark.django_db


def test_ledgers_render_and_cannot_be_edited(admin_client):
    launcher, trader = Wallet(), Wallet()
    room = environment_create(name="Room", launched_by=launcher.address)
    environment_join(environment_id=room.id, wallet=trader.address)
    trade_execute(environment_id=room.id, wallet=trader.address, amount=10**9, is_buy=True)
    settle_rewards(run_by="staff")
    for model in ("rewardaccount", "settlement", "rewardentry", "rewardtier"):
        response = admin_client.get(reverse(f"admin:rewards_{model}_changelist"))
        assert response.status_code == 200, model
    assert (
        trader.address
        in admin_client.get(reverse("admin:rewards_rewardentry_changelist")).content.decode()
    )
    entry = RewardEntry.objects.first()
    change = admin_client.post(reverse("admin:rewards_rewardentry_change", args=[entry.pk]), {})
    assert change.status_code == 403
    assert admin_client.get(reverse("admin:rewards_rewardaccount_add")).status_code == 403


def test_claims_can_be_marked_paid_and_accounts_link_to_their_entries(admin_client):
    from rewards.models import Claim, RewardAccount
    from rewards.services import claim_rewards

    launcher = Wallet()
    room = environment_create(name="Room", launched_by=launcher.address)
    environment_join(environment_id=room.id, wallet=launcher.address)
    trade_execute(environment_id=room.id, wallet=launcher.address, amount=10**9, is_buy=True)
    settle_rewards(run_by="staff")
    claim = claim_rewards(wallet=launcher.address).claim
    response = admin_client.post(
        reverse("admin:rewards_claim_changelist"),
        {"action": "mark_paid", "_selected_action": [claim.pk]},
    )
    assert response.status_code == 302
    claim.refresh_from_db()
    assert claim.status == Claim.Status.PAID and claim.paid_at is not None
    accounts = admin_client.get(reverse("admin:rewards_rewardaccount_changelist")).content.decode()
    assert f"?wallet={launcher.address}" in accounts
    entries = admin_client.get(
        reverse("admin:rewards_rewardentry_changelist") + f"?wallet={launcher.address}"
    )
    assert entries.status_code == 200
    assert "?e=1" not in entries.get("Location", "")
    assert launcher.address in entries.content.decode()
    assert RewardAccount.objects.get(wallet=launcher.address).claimed == claim.amount
