"""The operators' admin: environments, chat moderation, the read-only ledger."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from environments.models import ChatMessage, Environment, Position, RoundPosition
from environments.rounds import round_start
from environments.services import (
    chat_post,
    environment_create,
    environment_join,
    generate_mint,
)
from kernel.admin import short_price, short_wallet, sol, tokens, with_raw
from protocol.errors import DomainError
from tests.conftest import Wallet, require
from trading import curve
from trading.models import Trade
from trading.selectors import market_analytics, market_price
from trading.services import trade_execute
from trading.state import Phase

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
        "starting_sol": "5",
        "min_trade_sol": "0.001",
        "max_trade_sol": "20.000000001",
        "max_price_impact_bps": 500,
        "pool_lp_fee_bps": 20,
        "pool_protocol_fee_bps": 5,
        "pool_creator_fee_bps": 5,
        "migration_fee": 15_000_001,
        "new_round_after": "",
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
    assert short_price(environment.curve.spot_price) in html
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
    # Limits entered in SOL are stored in lamports exactly.
    assert environment.min_trade_lamports == 1_000_000
    assert environment.max_trade_lamports == 20_000_000_001
    assert environment.max_price_impact_bps == 500
    assert (environment.pool_lp_fee_bps, environment.pool_protocol_fee_bps) == (20, 5)
    assert environment.pool_creator_fee_bps == 5
    assert environment.migration_fee == 15_000_001
    assert environment.new_round_after is None
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
    limits = {"starting_sol": "100", "min_trade_sol": "0", "max_trade_sol": "50"}
    response = admin_client.post(url, {"name": "Renamed", **limits})  # is_open unchecked
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
    html = response.content.decode()
    assert short_price(trade.price) in html
    assert sol(trade.sol_amount) in html and tokens(trade.token_amount) in html
    assert short_wallet(trade.wallet) in html and trade.wallet not in html
    detail = admin_client.get(reverse("admin:trading_trade_change", args=[trade.pk]))
    assert detail.status_code == 200
    text = detail.content.decode()
    assert f"{sol(trade.sol_amount)} ({trade.sol_amount} lamports)" in text
    assert "1 SOL (1000000000 lamports)" in text  # what was asked for
    assert curve.format_price(trade.price) in text  # the exact price
    assert trade.wallet in text


# --- money, phase, limits and analytics ----------------------------------------------------------


def test_amounts_are_shown_exactly_in_sol_and_tokens() -> None:
    assert sol(85_000_000_001) == "85.000000001 SOL"
    assert sol(100_000_000_000) == "100 SOL"
    assert sol(1) == "0.000000001 SOL"
    assert sol(0) == "0 SOL"
    assert sol(None) == "-"
    assert tokens(206_900_000_000_000) == "206,900,000 tokens"
    assert tokens(1_234_567) == "1.234567 tokens"
    assert (
        with_raw(sol(15_000_001), 15_000_001, "lamports") == "0.015000001 SOL (15000001 lamports)"
    )
    assert short_price(Decimal("0.000000027958993476261")) == "0.0000000279590"
    assert short_price(Decimal("123.456789")) == "123.457"
    assert short_price(Decimal("0")) == "0"


def graduated(environment: Environment) -> Environment:
    Environment.objects.filter(pk=environment.pk).update(
        phase=Phase.POOL,
        real_token_reserves=0,
        real_sol_reserves=85_000_000_001,
        pool_sol_reserves=84_985_000_000,
        pool_token_reserves=206_900_000_000_000,
        market_cap=410_754_000_000,
        graduated_at=timezone.now(),
    )
    return Environment.objects.get(pk=environment.pk)


@pytest.mark.parametrize("phase", ["curve", "pool"])
def test_changelist_shows_money_phase_limits_and_analytics(
    admin_client: Client, environment: Environment, alice: Wallet, phase: str
) -> None:
    environment_join(environment_id=environment.id, wallet=alice.address)
    trade_execute(
        environment_id=environment.id, wallet=alice.address, amount=2 * 10**9, is_buy=True
    )
    if phase == "pool":
        environment = graduated(environment)
    environment.refresh_from_db()
    response = admin_client.get(ENVIRONMENT_CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert f"{phase}, round 1" in html
    assert sol(environment.market_cap) in html
    figures = market_analytics(environment, now=timezone.now())
    assert sol(int(figures["volume24h"])) in html
    assert figures["volume24h"] != "0"
    expected = "100.0%" if phase == "pool" else f"{Decimal(figures['progress']) * 100:.1f}%"
    assert expected in html
    assert "0 to 50 SOL" in html  # the default limits: no minimum, 50 SOL at most
    assert short_price(market_price(environment)) in html
    # A 1,400 px window: a handful of columns, no raw reserves.
    columns = response.context["cl"].list_display
    assert len(columns) <= 11
    assert "virtual_sol_reserves" not in columns and "token_mint" not in columns


def test_changelist_reads_analytics_for_the_page_at_once(
    admin_client: Client,
    make_environment: Callable[..., Environment],
) -> None:
    for index in range(3):
        make_environment(f"Launch {index}")
    admin_client.get(ENVIRONMENT_CHANGELIST)  # warm (session, content types)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(ENVIRONMENT_CHANGELIST)
    for index in range(3, 12):
        make_environment(f"Launch {index}")
    with CaptureQueriesContext(connection) as many:
        admin_client.get(ENVIRONMENT_CHANGELIST)
    assert len(many) == len(few)  # not one more per environment


@pytest.mark.parametrize("phase", ["curve", "pool"])
def test_change_page_shows_sol_and_the_raw_value(
    admin_client: Client, environment: Environment, phase: str
) -> None:
    if phase == "pool":
        environment = graduated(environment)
    url = reverse("admin:environments_environment_change", args=[quote(environment.pk)])
    response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "30 SOL (30000000000 lamports)" in html  # the initial virtual SOL
    assert "1,073,000,000 tokens (1073000000000000 raw units)" in html
    assert "0.015000001 SOL (15000001 lamports)" in html  # the migration fee
    if phase == "pool":
        assert "85.000000001 SOL (85000000001 lamports)" in html
        assert "206,900,000 tokens (206900000000000 raw units)" in html
    form = response.context["adminform"].form
    assert form["max_trade_sol"].value() == Decimal(50)
    assert "initial_virtual_sol" not in form.fields  # fixed at creation


def test_change_sets_limits_in_sol_exactly(admin_client: Client, environment: Environment) -> None:
    url = reverse("admin:environments_environment_change", args=[quote(environment.pk)])
    response = admin_client.post(
        url,
        {
            "name": environment.name,
            "is_open": "on",
            "starting_sol": "12.5",
            "min_trade_sol": "0.000000001",
            "max_trade_sol": "",
            "max_price_impact_bps": "250",
            "new_round_after": "600",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    environment.refresh_from_db()
    assert environment.starting_sol_balance == 12_500_000_000
    assert environment.min_trade_lamports == 1
    assert environment.max_trade_lamports is None
    assert environment.max_price_impact_bps == 250
    assert environment.new_round_after == 600


def test_change_refuses_a_maximum_below_the_minimum(
    admin_client: Client, environment: Environment
) -> None:
    url = reverse("admin:environments_environment_change", args=[quote(environment.pk)])
    data = {"name": "x", "starting_sol": "1", "min_trade_sol": "2", "max_trade_sol": "1"}
    response = admin_client.post(url, data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.non_field_errors()
    assert any("maximum trade" in error for error in errors)
    environment.refresh_from_db()
    assert environment.max_trade_lamports == 50 * 10**9


def test_add_refuses_sol_finer_than_a_lamport(admin_client: Client) -> None:
    response = admin_client.post(ENVIRONMENT_ADD, add_form(min_trade_sol="0.0000000001"))
    assert response.status_code == 200
    assert "min_trade_sol" in response.context["adminform"].form.errors
    assert not Environment.objects.exists()


# --- rounds and deleting -------------------------------------------------------------------------


def test_start_a_new_round_action(
    admin_client: Client, environment: Environment, alice: Wallet, trade: Trade
) -> None:
    response = run_action(admin_client, ENVIRONMENT_CHANGELIST, "start_new_round", [environment])
    assert response.status_code == 302
    environment.refresh_from_db()
    assert environment.round == 2
    assert environment.virtual_sol_reserves == environment.initial_virtual_sol
    position = Position.objects.get(environment=environment, wallet=alice.address)
    assert (position.sol_balance, position.token_balance) == (curve.DEFAULT_STARTING_SOL, 0)
    assert RoundPosition.objects.filter(environment=environment, round=1).count() == 1
    assert Trade.objects.filter(pk=trade.pk).exists()
    page = admin_client.get(response["Location"]).content.decode()
    assert f"Started round 2 of {environment}" in page


def test_an_environment_with_trades_cannot_be_deleted(
    admin_client: Client, environment: Environment, trade: Trade
) -> None:
    url = reverse("admin:environments_environment_delete", args=[quote(environment.pk)])
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert Environment.objects.filter(pk=environment.pk).exists()
    assert "has trades" in response.content.decode()

    response = run_action(
        admin_client, ENVIRONMENT_CHANGELIST, "delete_selected", [environment], post="yes"
    )
    assert Environment.objects.filter(pk=environment.pk).exists()
    assert Trade.objects.filter(pk=trade.pk).exists()
    page = admin_client.get(ENVIRONMENT_CHANGELIST).content.decode()
    assert "has trades" in page


def test_an_environment_without_trades_can_be_deleted(
    admin_client: Client, make_environment: Callable[..., Environment]
) -> None:
    quiet, other = make_environment("Quiet"), make_environment("Other")
    run_action(admin_client, ENVIRONMENT_CHANGELIST, "delete_selected", [quiet], post="yes")
    assert list(Environment.objects.values_list("pk", flat=True)) == [other.pk]
    url = reverse("admin:environments_environment_delete", args=[quote(other.pk)])
    admin_client.post(url, {"post": "yes"})
    assert not Environment.objects.exists()


def test_round_positions_are_listed_read_only(
    admin_client: Client, environment: Environment, trade: Trade
) -> None:
    run_action(admin_client, ENVIRONMENT_CHANGELIST, "start_new_round", [environment])
    record = RoundPosition.objects.get()
    response = admin_client.get(reverse("admin:environments_roundposition_changelist"))
    assert response.status_code == 200
    assert sol(record.sol_balance) in response.content.decode()
    assert admin_client.get(reverse("admin:environments_roundposition_add")).status_code == 403


# --- the list pages in a real browser ------------------------------------------------------------

LIST_PAGES = [
    "admin:environments_environment_changelist",
    "admin:environments_position_changelist",
    "admin:environments_roundposition_changelist",
    "admin:trading_trade_changelist",
    "admin:trading_marketevent_changelist",
]


@pytest.mark.django_db(transaction=True)
def test_list_pages_fit_a_1400_px_window(
    live_server: Any, admin_user: Any, client: Client, alice: Wallet
) -> None:
    from tests.e2e.test_page import CHROMIUM, FLAGS

    require(Path(CHROMIUM).exists(), "needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    environment = environment_create(name="A launch with a name of some length")
    environment_join(environment_id=environment.id, wallet=alice.address)
    for amount in (3 * 10**9, 10**9 + 123_456_789):
        trade_execute(
            environment_id=environment.id, wallet=alice.address, amount=amount, is_buy=True
        )
    round_start(environment_id=environment.id)
    client.force_login(admin_user)
    session = client.cookies["sessionid"].value
    urls = [live_server.url + reverse(name) for name in LIST_PAGES]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
        page = context.new_page()
        widths = {}
        for url in urls:
            page.goto(url)
            box = page.locator("#result_list").bounding_box()
            assert box is not None, url
            widths[url] = box["x"] + box["width"]
        browser.close()
    too_wide = {url: width for url, width in widths.items() if width > 1400}
    assert not too_wide, widths
