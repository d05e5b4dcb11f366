"""The operators' admin: environments, chat moderation, the read-only ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.test import Client
from django.urls import reverse

from environments.models import ChatMessage, Environment, Position
from environments.services import chat_post, environment_join, generate_mint
from protocol.errors import DomainError
from tests.conftest import Wallet
from trading import curve
from trading.models import Trade
from trading.services import trade_execute

pytestmark = pytest.mark.django_db

ENVIRONMENT_CHANGELIST = reverse("admin:environments_environment_changelist")
ENVIRONMENT_ADD = reverse("admin:environments_environment_add")
CHAT_CHANGELIST = reverse("admin:environments_chatmessage_changelist")
XSS = "<script>alert(1)</script>"


def add_form(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Operator launch",
        "token_mint": generate_mint(),
        "is_open": "on",
        "initial_virtual_sol": 40_000_000_000,
        "initial_virtual_token": 2_000_000_000_000_000,
        "initial_real_token": 1_500_000_000_000_000,
        "total_supply": 1_800_000_000_000_000,
        "protocol_fee_bps": 100,
        "creator_fee_bps": 0,
        "starting_sol_balance": 5_000_000_000,
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def run_action(client: Client, url: str, action: str, objects: list[Any], **extra: Any) -> Any:
    return client.post(
        url,
        {"action": action, "_selected_action": [str(obj.pk) for obj in objects], **extra},
    )


@pytest.fixture
def chat(environment: Environment, alice: Wallet) -> ChatMessage:
    environment_join(environment_id=environment.id, wallet=alice.address)
    posted = chat_post(environment_id=environment.id, wallet=alice.address, message="gm everyone")
    return posted.line


@pytest.fixture
def trade(environment: Environment, alice: Wallet) -> Trade:
    environment_join(environment_id=environment.id, wallet=alice.address)
    return trade_execute(
        environment_id=environment.id, wallet=alice.address, amount=1_000_000_000, is_buy=True
    ).trade


# --- environments ------------------------------------------------------------------------------


def test_changelist_shows_price_and_participants(
    admin_client: Client, environment: Environment
) -> None:
    response = admin_client.get(ENVIRONMENT_CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert "price (sol/token)" in html.lower()
    assert "participants" in html.lower()
    assert "column-price" in html and "column-participants" in html
    assert curve.format_price(environment.curve.spot_price) in html
    assert environment.id in html
    assert environment.name in html


def test_changelist_search(
    admin_client: Client, make_environment: Callable[..., Environment]
) -> None:
    wanted = make_environment("Moon rocket")
    other = make_environment("Dog coin")
    response = admin_client.get(ENVIRONMENT_CHANGELIST, {"q": "rocket"})
    assert response.status_code == 200
    shown = list(response.context["cl"].result_list)
    assert shown == [wanted]
    assert other.id not in response.content.decode()
    by_mint = admin_client.get(ENVIRONMENT_CHANGELIST, {"q": other.token_mint})
    assert list(by_mint.context["cl"].result_list) == [other]


def test_changelist_filter_by_open(
    admin_client: Client, make_environment: Callable[..., Environment]
) -> None:
    open_one = make_environment("Open one")
    closed_one = make_environment("Closed one")
    Environment.objects.filter(pk=closed_one.pk).update(is_open=False)
    closed = admin_client.get(ENVIRONMENT_CHANGELIST, {"is_open__exact": "0"})
    assert closed.status_code == 200
    assert list(closed.context["cl"].result_list) == [closed_one]
    opened = admin_client.get(ENVIRONMENT_CHANGELIST, {"is_open__exact": "1"})
    assert list(opened.context["cl"].result_list) == [open_one]


def test_add_form_renders_with_a_generated_mint(admin_client: Client) -> None:
    response = admin_client.get(ENVIRONMENT_ADD)
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "initial_virtual_sol" in form.fields
    assert "protocol_fee_bps" in form.fields
    assert "virtual_sol_reserves" not in form.fields  # live state is not editable
    assert form.initial["token_mint"]


def test_add_creates_environment_from_constants(admin_client: Client) -> None:
    data = add_form()
    response = admin_client.post(ENVIRONMENT_ADD, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    environment = Environment.objects.get()
    assert environment.name == "Operator launch"
    assert environment.token_mint == data["token_mint"]
    assert environment.is_open is True
    assert environment.initial_virtual_sol == 40_000_000_000
    assert environment.initial_virtual_token == 2_000_000_000_000_000
    assert environment.initial_real_token == 1_500_000_000_000_000
    assert environment.total_supply == 1_800_000_000_000_000
    assert environment.protocol_fee_bps == 100
    assert environment.creator_fee_bps == 0
    assert environment.starting_sol_balance == 5_000_000_000
    # The live state starts from the constants.
    assert environment.virtual_sol_reserves == 40_000_000_000
    assert environment.virtual_token_reserves == 2_000_000_000_000_000
    assert environment.real_sol_reserves == 0
    assert environment.real_token_reserves == 1_500_000_000_000_000
    assert environment.sequence == 0
    # And a participant starts with the custom balance and trades at the custom fees.
    _, position = environment_join(environment_id=environment.id, wallet=Wallet().address)
    assert position.sol_balance == 5_000_000_000


def test_add_closed_environment(admin_client: Client) -> None:
    response = admin_client.post(ENVIRONMENT_ADD, add_form(is_open=None))
    assert response.status_code == 302
    assert Environment.objects.get().is_open is False


def test_add_with_fee_above_the_cap_is_a_form_error(admin_client: Client) -> None:
    response = admin_client.post(ENVIRONMENT_ADD, add_form(protocol_fee_bps=5000))
    assert response.status_code == 200
    assert not Environment.objects.exists()


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"total_supply": 1_000_000_000_000_000}, id="real-above-supply"),
        pytest.param({"initial_virtual_sol": 0}, id="zero-virtual-sol"),
    ],
)
def test_add_with_inconsistent_constants_is_a_form_error(
    admin_client: Client, overrides: dict[str, Any]
) -> None:
    response = admin_client.post(ENVIRONMENT_ADD, add_form(**overrides))
    assert response.status_code == 200
    assert not Environment.objects.exists()


def test_change_view_keeps_constants_read_only(
    admin_client: Client, environment: Environment
) -> None:
    url = reverse("admin:environments_environment_change", args=[quote(environment.pk)])
    response = admin_client.get(url)
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "name" in form.fields and "is_open" in form.fields
    for field in ("initial_virtual_sol", "protocol_fee_bps", "token_mint", "sequence"):
        assert field not in form.fields


def test_change_view_closes_and_renames(admin_client: Client, environment: Environment) -> None:
    url = reverse("admin:environments_environment_change", args=[quote(environment.pk)])
    response = admin_client.post(url, {"name": "Renamed"})  # is_open unchecked
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:environments_environment_changelist")
    environment.refresh_from_db()
    assert environment.name == "Renamed"
    assert environment.is_open is False
    assert environment.virtual_sol_reserves == curve.DEFAULT_VIRTUAL_SOL


def test_close_and_reopen_trading_actions(
    admin_client: Client, make_environment: Callable[..., Environment]
) -> None:
    first, second, untouched = (make_environment(f"Launch {index}") for index in range(3))
    response = run_action(admin_client, ENVIRONMENT_CHANGELIST, "close_trading", [first, second])
    assert response.status_code == 302
    states = dict(Environment.objects.values_list("id", "is_open"))
    assert states == {first.id: False, second.id: False, untouched.id: True}

    response = run_action(admin_client, ENVIRONMENT_CHANGELIST, "reopen_trading", [first])
    assert response.status_code == 302
    states = dict(Environment.objects.values_list("id", "is_open"))
    assert states == {first.id: True, second.id: False, untouched.id: True}


def test_closed_environment_takes_no_trades(
    admin_client: Client, environment: Environment, alice: Wallet
) -> None:
    environment_join(environment_id=environment.id, wallet=alice.address)
    run_action(admin_client, ENVIRONMENT_CHANGELIST, "close_trading", [environment])
    with pytest.raises(DomainError) as refused:
        trade_execute(
            environment_id=environment.id, wallet=alice.address, amount=10**9, is_buy=True
        )
    assert refused.value.code == "ENVIRONMENT_CLOSED"


def test_admin_requires_staff(client: Client, environment: Environment) -> None:
    response = client.get(ENVIRONMENT_CHANGELIST)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


# --- chat moderation ---------------------------------------------------------------------------


def test_hide_and_unhide_chat_actions(
    admin_client: Client, environment: Environment, alice: Wallet, chat: ChatMessage
) -> None:
    other = chat_post(environment_id=environment.id, wallet=alice.address, message="second").line
    response = run_action(admin_client, CHAT_CHANGELIST, "hide_messages", [chat])
    assert response.status_code == 302
    chat.refresh_from_db()
    other.refresh_from_db()
    assert chat.hidden is True
    assert other.hidden is False

    response = run_action(admin_client, CHAT_CHANGELIST, "unhide_messages", [chat])
    assert response.status_code == 302
    chat.refresh_from_db()
    assert chat.hidden is False


def test_hidden_chat_leaves_the_history(
    admin_client: Client, environment: Environment, alice: Wallet, chat: ChatMessage
) -> None:
    from environments.selectors import environment_state

    run_action(admin_client, CHAT_CHANGELIST, "hide_messages", [chat])
    env, position = environment_join(environment_id=environment.id, wallet=alice.address)
    assert environment_state(env, position).chatHistory == []


def test_chat_filter_by_hidden(
    admin_client: Client, environment: Environment, alice: Wallet, chat: ChatMessage
) -> None:
    other = chat_post(environment_id=environment.id, wallet=alice.address, message="second").line
    ChatMessage.objects.filter(pk=chat.pk).update(hidden=True)
    response = admin_client.get(CHAT_CHANGELIST, {"hidden__exact": "1"})
    assert list(response.context["cl"].result_list) == [chat]
    response = admin_client.get(CHAT_CHANGELIST, {"q": "second"})
    assert list(response.context["cl"].result_list) == [other]


def test_chat_changelist_escapes_the_text(
    admin_client: Client, environment: Environment, alice: Wallet
) -> None:
    environment_join(environment_id=environment.id, wallet=alice.address)
    chat_post(environment_id=environment.id, wallet=alice.address, message=XSS)
    response = admin_client.get(CHAT_CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS not in html


def test_chat_admin_cannot_add(admin_client: Client) -> None:
    assert admin_client.get(reverse("admin:environments_chatmessage_add")).status_code == 403


# --- the read-only ledger ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["trading_trade", "environments_position"], ids=["trade", "position"]
)
def test_ledger_admin_is_read_only(admin_client: Client, trade: Trade, name: str) -> None:
    obj = trade if name == "trading_trade" else Position.objects.get()
    changelist = admin_client.get(reverse(f"admin:{name}_changelist"))
    assert changelist.status_code == 200
    assert str(obj.pk) in changelist.content.decode() or obj.wallet in changelist.content.decode()

    assert admin_client.get(reverse(f"admin:{name}_add")).status_code == 403
    assert admin_client.post(reverse(f"admin:{name}_add"), {}).status_code == 403

    change_url = reverse(f"admin:{name}_change", args=[obj.pk])
    view = admin_client.get(change_url)
    if view.status_code == 200:
        html = view.content.decode()
        assert 'name="_save"' not in html
        assert 'name="_continue"' not in html
    else:
        assert view.status_code == 403
    assert admin_client.post(change_url, {"wallet": "x", "sol_amount": 1}).status_code == 403
    delete_url = reverse(f"admin:{name}_delete", args=[obj.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403

    before = type(obj).objects.get(pk=obj.pk)
    assert before.wallet == obj.wallet
    assert type(obj).objects.count() == 1


def test_trade_changelist_shows_price(admin_client: Client, trade: Trade) -> None:
    response = admin_client.get(reverse("admin:trading_trade_changelist"))
    assert response.status_code == 200
    assert curve.format_price(trade.price) in response.content.decode()
