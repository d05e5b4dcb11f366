"""Operators can look receipts up, never edit them."""

import pytest
from django.urls import reverse

from environments.services import environment_create
from idempotency.models import Receipt
from tests.conftest import Wallet

pytestmark = pytest.mark.django_db


def test_receipts_are_listed_searchable_and_read_only(admin_client):
    launcher = Wallet()
    environment_create(name="Room", launched_by=launcher.address, request_id="launch-1")
    listing = admin_client.get(
        reverse("admin:idempotency_receipt_changelist") + f"?q={launcher.address}"
    )
    assert listing.status_code == 200
    assert "launch-1" in listing.content.decode()
    receipt = Receipt.objects.get()
    detail = admin_client.get(reverse("admin:idempotency_receipt_change", args=[receipt.pk]))
    assert detail.status_code == 200
    change = admin_client.post(reverse("admin:idempotency_receipt_change", args=[receipt.pk]), {})
    assert change.status_code == 403
    assert admin_client.get(reverse("admin:idempotency_receipt_add")).status_code == 403
