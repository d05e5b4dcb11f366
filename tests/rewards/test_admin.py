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
