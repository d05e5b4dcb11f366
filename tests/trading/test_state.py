"""The curve's stored state: :mod:`trading.state` names every field once, and its mappings agree
with the model (no database needed)."""

from __future__ import annotations

from django.forms.models import model_to_dict

from environments.models import Environment
from trading.curve import Curve
from trading.state import CONSTANT_FIELDS, RESERVE_FIELDS, CurveConstants, CurveState

# What the market's life keeps besides the curve's reserves: its phase and pool, the figures
# every trade refreshes, and its rounds.
LIFE_FIELDS = {
    "phase",
    "pool_sol_reserves",
    "pool_token_reserves",
    "graduated_at",
    "market_cap",
    "last_trade_at",
    "round",
    "round_started_at",
    "new_round_after",
}


def test_every_stored_field_is_a_constant_a_reserve_or_the_markets_life() -> None:
    stored = {field.name for field in CurveState._meta.local_fields}
    assert stored == set(CONSTANT_FIELDS.values()) | set(RESERVE_FIELDS) | LIFE_FIELDS
    assert not set(CONSTANT_FIELDS.values()) & set(RESERVE_FIELDS)


def test_new_fields_start_the_curve_at_its_constants() -> None:
    constants = CurveConstants(virtual_sol=40_000_000_000, real_token=700_000_000_000_000)
    fields = constants.fields()
    assert set(fields) == set(CONSTANT_FIELDS.values()) | set(RESERVE_FIELDS) | {"market_cap"}
    assert CurveConstants.from_fields(fields) == constants
    environment = Environment(**fields)
    assert environment.curve == Curve(virtual_sol=40_000_000_000, real_token=700_000_000_000_000)
    assert not environment.complete


def test_apply_curve_changes_exactly_the_reserve_fields() -> None:
    environment = Environment(**CurveConstants().fields())
    before = model_to_dict(environment)
    fill = environment.curve.buy(10**9)
    environment.apply_curve(fill.curve)
    after = model_to_dict(environment)
    assert {name for name in after if after[name] != before[name]} == set(RESERVE_FIELDS)
    assert environment.curve == fill.curve
