"""The create_environment management command."""

from __future__ import annotations

from io import StringIO

import base58
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from environments.models import Environment
from environments.services import environment_join
from tests.conftest import Wallet
from trading import curve

pytestmark = pytest.mark.django_db


def create(*args: str) -> str:
    out = StringIO()
    call_command("create_environment", *args, stdout=out)
    return out.getvalue()


def test_creates_with_given_constants() -> None:
    mint = base58.b58encode(bytes(range(32))).decode()
    launcher = Wallet().address
    output = create(
        "Alpha launch",
        "--id",
        "alpha",
        "--token-mint",
        mint,
        "--launched-by",
        launcher,
        "--virtual-sol",
        "50000000000",
        "--virtual-token",
        "2000000000000000",
        "--real-token",
        "1000000000000000",
        "--total-supply",
        "1500000000000000",
        "--protocol-fee-bps",
        "100",
        "--creator-fee-bps",
        "0",
        "--starting-sol",
        "7000000000",
    )
    environment = Environment.objects.get(pk="alpha")
    assert "alpha" in output
    assert environment.name == "Alpha launch"
    assert environment.token_mint == mint
    assert environment.launched_by == launcher
    assert environment.is_open is True
    assert environment.initial_virtual_sol == environment.virtual_sol_reserves == 50_000_000_000
    assert (
        environment.initial_virtual_token
        == environment.virtual_token_reserves
        == 2_000_000_000_000_000
    )
    assert (
        environment.initial_real_token == environment.real_token_reserves == 1_000_000_000_000_000
    )
    assert environment.real_sol_reserves == 0
    assert environment.total_supply == 1_500_000_000_000_000
    assert environment.protocol_fee_bps == 100
    assert environment.creator_fee_bps == 0
    assert environment.starting_sol_balance == 7_000_000_000
    assert environment.sequence == 0
    _, position = environment_join(environment_id="alpha", wallet=Wallet().address)
    assert position.sol_balance == 7_000_000_000


def test_defaults_are_pump_fun() -> None:
    create("Defaults")
    environment = Environment.objects.get()
    assert environment.id.startswith("env_")
    assert len(base58.b58decode(environment.token_mint)) == 32
    assert environment.virtual_sol_reserves == curve.DEFAULT_VIRTUAL_SOL
    assert environment.virtual_token_reserves == curve.DEFAULT_VIRTUAL_TOKEN
    assert environment.real_token_reserves == curve.DEFAULT_REAL_TOKEN
    assert environment.total_supply == curve.DEFAULT_TOTAL_SUPPLY
    assert environment.protocol_fee_bps == 95
    assert environment.creator_fee_bps == 30
    assert environment.starting_sol_balance == 100_000_000_000
    assert environment.launched_by == ""


def test_closed_flag() -> None:
    create("Closed", "--id", "closed-one", "--closed")
    assert Environment.objects.get(pk="closed-one").is_open is False


def test_if_missing_is_idempotent() -> None:
    create("First", "--id", "alpha", "--if-missing", "--protocol-fee-bps", "50")
    output = create("Second", "--id", "alpha", "--if-missing", "--protocol-fee-bps", "10")
    assert "already exists" in output
    environment = Environment.objects.get()
    assert environment.pk == "alpha"
    assert environment.name == "First"
    assert environment.protocol_fee_bps == 50


def test_duplicate_id_without_if_missing_fails() -> None:
    create("First", "--id", "alpha")
    with pytest.raises(CommandError, match="already exists"):
        create("Second", "--id", "alpha")
    assert Environment.objects.get().name == "First"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--protocol-fee-bps", "5000"], id="protocol-fee-too-high"),
        pytest.param(["--creator-fee-bps", "1001"], id="creator-fee-too-high"),
        pytest.param(["--protocol-fee-bps", "-1"], id="negative-fee"),
        pytest.param(["--real-token", "0"], id="no-real-tokens"),
        pytest.param(
            ["--real-token", "2000000000000000", "--virtual-token", "1000000000000000"],
            id="real-above-virtual",
        ),
        pytest.param(
            ["--real-token", "900000000000000", "--total-supply", "800000000000000"],
            id="real-above-supply",
        ),
        pytest.param(["--virtual-sol", "0"], id="zero-virtual-sol"),
        pytest.param(["--starting-sol", "-5"], id="negative-start"),
        pytest.param(["--token-mint", "not-a-mint"], id="bad-mint"),
    ],
)
def test_invalid_constants_fail(args: list[str]) -> None:
    with pytest.raises(CommandError):
        create("Bad", "--id", "bad", *args)
    assert not Environment.objects.exists()


@pytest.mark.parametrize("name", ["", "   ", "n" * 65])
def test_invalid_name_fails(name: str) -> None:
    with pytest.raises(CommandError):
        create(name)
    assert not Environment.objects.exists()


@pytest.mark.parametrize(
    "environment_id",
    ["has space", "slash/id", "semi;colon", "star*", "", "x" * 65, "quote'"],
)
def test_invalid_id_fails(environment_id: str) -> None:
    with pytest.raises(CommandError):
        create("Bad id", "--id", environment_id)
    assert not Environment.objects.exists()


@pytest.mark.parametrize("environment_id", ["café", "\uff46\uff55\uff4c\uff4c", "٣٣"])
def test_non_ascii_id_fails(environment_id: str) -> None:
    with pytest.raises(CommandError):
        create("Bad id", "--id", environment_id)
    assert not Environment.objects.exists()


def test_valid_id_characters_are_accepted() -> None:
    create("Dotted", "--id", "Alpha_1-2.3")
    assert Environment.objects.filter(pk="Alpha_1-2.3").exists()
    create("Long", "--id", "x" * 64)
    assert Environment.objects.filter(pk="x" * 64).exists()


def test_limits_pool_fees_and_new_rounds_are_options() -> None:
    create(
        "Limited",
        "--id",
        "limited",
        "--min-trade",
        "1000000",
        "--max-trade",
        "0",
        "--max-price-impact-bps",
        "300",
        "--pool-lp-fee-bps",
        "25",
        "--migration-fee",
        "0",
        "--new-round-after",
        "600",
    )
    environment = Environment.objects.get(pk="limited")
    assert environment.min_trade_lamports == 1_000_000
    assert environment.max_trade_lamports is None  # 0: no maximum
    assert environment.max_price_impact_bps == 300
    assert environment.pool_lp_fee_bps == 25
    assert environment.migration_fee == 0
    assert environment.new_round_after == 600


def test_the_demo_keeps_the_default_limits_and_has_no_automatic_rounds_unless_asked() -> None:
    create("Plain", "--id", "plain")
    environment = Environment.objects.get(pk="plain")
    assert environment.max_trade_lamports == 50 * curve.LAMPORTS_PER_SOL
    assert environment.max_price_impact_bps is None
    assert environment.new_round_after is None


def test_if_missing_sets_new_round_after_on_an_existing_environment() -> None:
    create("Demo launch", "--id", "demo")
    output = create("Demo launch", "--id", "demo", "--if-missing", "--new-round-after", "600")
    assert "already exists" in output
    assert "now start after 600 quiet seconds" in output
    assert Environment.objects.get(pk="demo").new_round_after == 600
    again = create("Demo launch", "--id", "demo", "--if-missing", "--new-round-after", "600")
    assert "now start" not in again  # nothing to change
    create("Demo launch", "--id", "demo", "--if-missing", "--new-round-after", "0")
    assert Environment.objects.get(pk="demo").new_round_after is None


def test_inconsistent_limits_are_a_command_error() -> None:
    with pytest.raises(CommandError, match="maximum trade"):
        create("Bad", "--id", "bad", "--min-trade", "2000", "--max-trade", "1000")
    assert not Environment.objects.filter(pk="bad").exists()
