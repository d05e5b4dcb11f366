"""Launching over HTTP with an idempotency key, and the launcher's REWARD_UPDATE push."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.test import Client

from environments import services as environment_services
from environments.models import Environment
from environments.services import environment_create
from idempotency.models import Receipt
from tests.conftest import Wallet, open_socket

ENVIRONMENTS = "/api/environments"


def launch(wallet: Wallet, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {wallet.token}"}
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return Client().post(
        ENVIRONMENTS, data=json.dumps(body), content_type="application/json", **headers
    )


@pytest.mark.django_db
def test_a_launch_repeated_with_its_key_answers_the_same_environment(alice: Wallet) -> None:
    first = launch(alice, {"name": "Moon"}, key="launch-1")
    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first.headers
    again = launch(alice, {"name": "Moon"}, key="launch-1")
    assert again.status_code == 200, again.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Environment.objects.count() == 1
    # Without a key, or with another one, it is a new launch.
    assert launch(alice, {"name": "Moon"}).status_code == 201
    assert launch(alice, {"name": "Moon"}, key="launch-2").status_code == 201
    assert Environment.objects.count() == 3


@pytest.mark.django_db
def test_the_body_request_id_works_like_the_header(alice: Wallet) -> None:
    first = launch(alice, {"name": "Moon", "requestId": "r-1"})
    again = launch(alice, {"name": "Moon"}, key="r-1")  # the same key, given the other way
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Environment.objects.count() == 1


@pytest.mark.django_db
def test_a_key_reused_for_another_launch_is_invalid_and_launches_nothing(alice: Wallet) -> None:
    assert launch(alice, {"name": "Moon"}, key="k").status_code == 201
    reused = launch(alice, {"name": "Sun"}, key="k")
    assert reused.status_code == 400
    assert reused.json()["code"] == "INVALID_MESSAGE"
    assert reused.json()["details"]["field"] == "requestId"
    assert Environment.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "key", "field"),
    [
        ({"name": "Moon"}, "k" * 65, "Idempotency-Key"),
        ({"name": "Moon", "requestId": "a"}, "b", "requestId"),
    ],
)
def test_bad_keys_are_refused(alice: Wallet, body: dict, key: str, field: str) -> None:
    response = launch(alice, body, key=key)
    assert response.status_code == 400
    assert response.json()["details"]["field"] == field
    assert not Environment.objects.exists()
    assert not Receipt.objects.exists()


@pytest.mark.django_db
def test_keys_are_per_wallet(alice: Wallet, bob: Wallet) -> None:
    assert launch(alice, {"name": "Moon"}, key="k").status_code == 201
    assert launch(bob, {"name": "Moon"}, key="k").status_code == 201
    assert Environment.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_launch_count_is_read_after_the_launch_is_saved(alice: Wallet, monkeypatch) -> None:
    """The REWARD_UPDATE push is registered after the insert, inside its transaction."""
    seen: list[int] = []

    def touch_on_commit(key: str) -> None:
        transaction.on_commit(
            lambda: seen.append(Environment.objects.filter(launched_by=alice.address).count())
        )

    monkeypatch.setattr(environment_services, "touch_on_commit", touch_on_commit)
    environment_create(name="Mine", launched_by=alice.address)
    assert seen == [1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_subscriber_is_pushed_the_new_launch_count(
    alice: Wallet, published_tiers: None, monkeypatch
) -> None:
    socket = await open_socket(alice)
    subscribe = {"type": "SUBSCRIBE_REWARDS", "data": {"userId": alice.address}}
    await socket.send_to(text_data=json.dumps(subscribe))
    assert json.loads(await socket.receive_from(timeout=5))["data"]["totalLaunches"] == 0
    create = Environment.objects.create

    def slow_create(**fields: Any) -> Environment:
        # A slow insert: an update computed before it is saved would count no launch.
        time.sleep(0.3)
        return create(**fields)

    monkeypatch.setattr(Environment.objects, "create", slow_create)
    await sync_to_async(environment_create)(name="Mine", launched_by=alice.address)
    pushed = json.loads(await socket.receive_from(timeout=5))
    assert pushed["type"] == "REWARD_UPDATE"
    assert pushed["data"]["totalLaunches"] == 1
    await socket.disconnect()
