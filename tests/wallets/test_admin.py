"""Operators can see who asked to sign in, never edit a challenge."""

import pytest
from django.urls import reverse

from tests.conftest import Wallet
from wallets.models import AuthChallenge
from wallets.services import challenge_create

pytestmark = pytest.mark.django_db


def test_challenges_are_listed_searchable_and_read_only(admin_client):
    asking, other = Wallet(), Wallet()
    challenge_create(wallet=asking.address, host="testserver")
    challenge_create(wallet=other.address, host="testserver")
    listing = admin_client.get(
        reverse("admin:wallets_authchallenge_changelist") + f"?q={asking.address}"
    )
    assert listing.status_code == 200
    page = listing.content.decode()
    assert asking.address in page
    assert other.address not in page
    challenge = AuthChallenge.objects.get(wallet=asking.address)
    change_url = reverse("admin:wallets_authchallenge_change", args=[challenge.pk])
    assert admin_client.get(change_url).status_code == 200
    assert admin_client.post(change_url, {}).status_code == 403
    assert admin_client.get(reverse("admin:wallets_authchallenge_add")).status_code == 403
