"""The operators' admin of environments: money shown in SOL and tokens (the stored integers on
the detail page), phase, round, limits and 24 h analytics; rounds started and trading closed
through the services."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

from environments import presence
from environments.models import ChatMessage, Environment, Position, RoundPosition
from environments.rounds import round_start
from environments.services import (
    chat_set_hidden,
    environment_create,
    environment_set_limits,
    environment_set_open,
)
from kernel.admin import (
    LedgerAdmin,
    environment_column,
    short_price,
    sol,
    tokens,
    wallet_column,
    with_raw,
)
from kernel.db import model_field
from protocol.errors import DomainError
from trading import curve, state
from trading.models import Trade
from trading.selectors import market_analytics, market_analytics_many, market_price
from trading.state import CurveConstants

LAMPORTS_PER_SOL = curve.LAMPORTS_PER_SOL

# Stored amounts shown readably on the detail page: field → (format, raw unit).
MONEY_FIELDS: dict[str, tuple[Callable[[int | None], str], str]] = {
    "initial_virtual_sol": (sol, "lamports"),
    "initial_virtual_token": (tokens, "raw units"),
    "initial_real_token": (tokens, "raw units"),
    "total_supply": (tokens, "raw units"),
    "migration_fee": (sol, "lamports"),
    "virtual_sol_reserves": (sol, "lamports"),
    "virtual_token_reserves": (tokens, "raw units"),
    "real_sol_reserves": (sol, "lamports"),
    "real_token_reserves": (tokens, "raw units"),
    "pool_sol_reserves": (sol, "lamports"),
    "pool_token_reserves": (tokens, "raw units"),
    "market_cap": (sol, "lamports"),
    "starting_sol_balance": (sol, "lamports"),
    "min_trade_lamports": (sol, "lamports"),
    "max_trade_lamports": (sol, "lamports"),
}

# The curve's constants, fixed at creation (lamports and raw units, as pump.fun states them).
CURVE_FIELDS = (
    "initial_virtual_sol",
    "initial_virtual_token",
    "initial_real_token",
    "total_supply",
    "protocol_fee_bps",
    "creator_fee_bps",
)
POOL_FIELDS = ("pool_lp_fee_bps", "pool_protocol_fee_bps", "pool_creator_fee_bps", "migration_fee")
# What operators may change on a live environment (entered in SOL where money).
LIMIT_INPUTS = ("starting_sol", "min_trade_sol", "max_trade_sol", "max_price_impact_bps")
LIMIT_FIELDS = (
    "starting_sol_balance",
    "min_trade_lamports",
    "max_trade_lamports",
    "max_price_impact_bps",
)
# The form's SOL inputs and the lamport fields they fill.
SOL_INPUTS = {
    "starting_sol": "starting_sol_balance",
    "min_trade_sol": "min_trade_lamports",
    "max_trade_sol": "max_trade_lamports",
}
STATE_FIELDS = (
    "phase",
    "round",
    "round_started_at",
    "graduated_at",
    "last_trade_at",
    "virtual_sol_reserves",
    "virtual_token_reserves",
    "real_sol_reserves",
    "real_token_reserves",
    "pool_sol_reserves",
    "pool_token_reserves",
    "market_cap",
    "sequence",
    "launched_by",
    "created_at",
)
SHOWN = "_shown"  # suffix of the readonly displays of MONEY_FIELDS
ANALYTICS = "analytics_figures"  # where a listed environment keeps its page's analytics
PARTICIPANTS = "participants_now"  # ... and its participant count


def shown(field: str) -> str:
    return f"{field}{SHOWN}" if field in MONEY_FIELDS else field


def sol_field(label: str, required: bool, help_text: str) -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        required=required,
        min_value=Decimal(0),
        max_digits=19,
        decimal_places=9,  # whole lamports: the conversion below is exact
        help_text=help_text,
    )


def to_lamports(value: Decimal | None) -> int | None:
    return None if value is None else int(value * LAMPORTS_PER_SOL)


def to_sol(lamports: int | None) -> Decimal | None:
    return None if lamports is None else Decimal(lamports) / LAMPORTS_PER_SOL


class EnvironmentForm(forms.ModelForm[Environment]):
    """The curve's constants in lamports and raw units; the trading limits and the starting
    balance in SOL (converted to lamports exactly). A new environment's values are checked as
    the service will check them, before saving."""

    starting_sol = sol_field(
        "starting balance (SOL)", True, "Each new participant's SOL (everyone's at a new round)."
    )
    min_trade_sol = sol_field("minimum trade (SOL)", True, "0: no minimum. Sells by SOL value.")
    max_trade_sol = sol_field("maximum trade (SOL)", False, "Empty: no maximum.")

    class Meta:
        model = Environment
        fields = (
            "name",
            "token_mint",
            "is_open",
            "new_round_after",
            *CURVE_FIELDS,
            *POOL_FIELDS,
            "max_price_impact_bps",
        )
        help_texts = {
            "initial_virtual_sol": "Lamports (1 SOL = 1,000,000,000).",
            "initial_virtual_token": "Raw units (1 token = 1,000,000).",
            "initial_real_token": "Raw units (1 token = 1,000,000).",
            "total_supply": "Raw units (1 token = 1,000,000).",
            "migration_fee": "Lamports the migration to the pool keeps (pump.fun's: 0.015000001).",
            "max_price_impact_bps": "Basis points (100 = 1%). Empty: no limit.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        source = self.instance if not self.instance._state.adding else CurveConstants()
        for field, stored in SOL_INPUTS.items():
            if field in self.fields:
                self.fields[field].initial = to_sol(getattr(source, stored))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for field, stored in SOL_INPUTS.items():
            if field in data:  # a valid input (absent when it was refused)
                data[stored] = to_lamports(data[field])
        fields = state.CONSTANT_FIELDS.values()
        if self.instance._state.adding:
            values = data
        else:  # the limits change; the curve's constants stay as created
            values = {field: getattr(self.instance, field) for field in fields}
            values.update({field: data[field] for field in LIMIT_FIELDS if field in data})
        if all(field in values for field in fields):
            try:
                CurveConstants.from_fields(values).validate()
            except DomainError as exc:
                raise forms.ValidationError(exc.message) from None
        return data


class EnvironmentChangeList(ChangeList):
    """Reads the analytics of a whole page in one statement, and its participant counts in
    one presence round trip."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        figures = market_analytics_many(self.result_list, now=timezone.now())
        counts = presence.backend().counts([environment.pk for environment in self.result_list])
        for environment in self.result_list:
            setattr(environment, ANALYTICS, figures.get(environment.pk))
            setattr(environment, PARTICIPANTS, counts.get(environment.pk))


def _money_display(field: str) -> Callable[[Any, Environment], str]:
    formatter, unit = MONEY_FIELDS[field]
    label = model_field(Environment, field).verbose_name

    @admin.display(description=label)
    def display(self: Any, obj: Environment) -> str:
        raw = getattr(obj, field)
        return with_raw(formatter(raw), raw, unit)

    return display


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin[Environment]):
    form = EnvironmentForm
    list_display = (
        "__str__",
        "is_open",
        "phase_round",
        "price",
        "market_cap_sol",
        "volume_24h",
        "trades_24h",
        "progress",
        "limits",
        "participants",
    )
    list_display_links = ("__str__",)
    list_filter = ("is_open", "phase", "created_at")
    list_per_page = 50
    search_fields = ("id", "name", "token_mint", "launched_by")
    actions = ("start_new_round", "close_trading", "reopen_trading", "delete_selected")

    def get_fieldsets(self, request: HttpRequest, obj: Environment | None = None) -> Any:
        live = ("Live state", {"fields": [shown(field) for field in STATE_FIELDS]})
        if obj is None:
            curve_fields: list[str] = list(CURVE_FIELDS)
            pool_fields: list[str] = list(POOL_FIELDS)
        else:
            curve_fields = [shown(field) for field in CURVE_FIELDS]
            pool_fields = [shown(field) for field in POOL_FIELDS]
        fieldsets: list[Any] = [
            (None, {"fields": ("name", "token_mint", "is_open", "new_round_after")}),
            ("Limits and starting balance", {"fields": LIMIT_INPUTS}),
            ("Curve constants (fixed at creation)", {"fields": curve_fields}),
            ("Pool (where a complete curve migrates; fixed at creation)", {"fields": pool_fields}),
        ]
        if obj is not None:
            fieldsets += [
                live,
                (
                    "Analytics (current round)",
                    {"fields": ("volume_24h", "trades_24h", "unique_traders_24h", "progress")},
                ),
            ]
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Environment | None = None) -> Any:
        if obj is None:
            return ()
        fixed = [shown(field) for field in (*CURVE_FIELDS, *POOL_FIELDS, *STATE_FIELDS)]
        return (
            *fixed,
            "token_mint",
            "volume_24h",
            "trades_24h",
            "unique_traders_24h",
            "progress",
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return EnvironmentChangeList

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        from environments.services import generate_mint

        return {"token_mint": generate_mint()}

    # --- columns ----------------------------------------------------------------------------

    def _analytics(self, obj: Environment) -> dict[str, Any]:
        figures: dict[str, Any] | None = getattr(obj, ANALYTICS, None)
        if figures is None:
            figures = market_analytics(obj, now=timezone.now())
            setattr(obj, ANALYTICS, figures)
        return figures

    @admin.display(description="phase", ordering="phase")
    def phase_round(self, obj: Environment) -> str:
        return f"{obj.phase}, round {obj.round}"

    @admin.display(description="price (SOL/token)")
    def price(self, obj: Environment) -> str:
        return short_price(market_price(obj))

    @admin.display(description="market cap", ordering="market_cap")
    def market_cap_sol(self, obj: Environment) -> str:
        return sol(obj.market_cap)

    @admin.display(description="volume 24 h")
    def volume_24h(self, obj: Environment) -> str:
        return sol(int(self._analytics(obj)["volume24h"]))

    @admin.display(description="trades 24 h")
    def trades_24h(self, obj: Environment) -> int:
        return int(self._analytics(obj)["trades24h"])

    @admin.display(description="traders 24 h")
    def unique_traders_24h(self, obj: Environment) -> int:
        return int(self._analytics(obj)["uniqueTraders24h"])

    @admin.display(description="progress")
    def progress(self, obj: Environment) -> str:
        fraction = Decimal(self._analytics(obj)["progress"])
        return f"{(fraction * 100).quantize(Decimal('0.1'))}%"

    @admin.display(description="limits")
    def limits(self, obj: Environment) -> str:
        low = sol(obj.min_trade_lamports) if obj.min_trade_lamports else "0"
        high = sol(obj.max_trade_lamports) if obj.max_trade_lamports is not None else "any"
        impact = (
            f", impact ≤ {Decimal(obj.max_price_impact_bps) / 100}%"
            if obj.max_price_impact_bps is not None
            else ""
        )
        return f"{low} to {high}{impact}"

    @admin.display(description="participants")
    def participants(self, obj: Environment) -> int:
        count: int | None = getattr(obj, PARTICIPANTS, None)
        return presence.backend().count(obj.id) if count is None else count

    # --- writes -----------------------------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Environment, form: Any, change: bool) -> None:
        data = form.cleaned_data
        if change:
            if "is_open" in form.changed_data:
                environment_set_open(environment_id=obj.id, is_open=obj.is_open)
            if "name" in form.changed_data:
                Environment.objects.filter(pk=obj.pk).update(name=obj.name)
            environment_set_limits(
                environment_id=obj.id,
                starting_sol_balance=data["starting_sol_balance"],
                min_trade_lamports=data["min_trade_lamports"],
                max_trade_lamports=data["max_trade_lamports"],
                max_price_impact_bps=data["max_price_impact_bps"],
                new_round_after=data["new_round_after"],
            )
            return
        created = environment_create(
            name=obj.name,
            token_mint=obj.token_mint or None,
            is_open=obj.is_open,
            constants=CurveConstants.from_fields(data),
            new_round_after=data.get("new_round_after"),
        )
        obj.pk = created.pk
        obj.refresh_from_db()

    def _set_open(
        self, request: HttpRequest, queryset: QuerySet[Environment], is_open: bool
    ) -> None:
        for environment in queryset:
            environment_set_open(environment_id=environment.id, is_open=is_open)
        verb = "Reopened" if is_open else "Closed"
        self.message_user(request, f"{verb} {queryset.count()} environment(s).", messages.SUCCESS)

    @admin.action(description="Start a new round (balances reset, market back at its curve)")
    def start_new_round(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        for environment in queryset:
            started = round_start(environment_id=environment.id)
            assert started is not None
            self.message_user(
                request,
                f"Started round {started.environment.round} of {started.environment}: "
                f"{started.positions} position(s) reset to "
                f"{sol(started.environment.starting_sol_balance)}.",
                messages.SUCCESS,
            )

    @admin.action(description="Close trading")
    def close_trading(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        self._set_open(request, queryset, False)

    @admin.action(description="Reopen trading")
    def reopen_trading(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        self._set_open(request, queryset, True)

    # --- deleting: only environments without trades ----------------------------------------------

    def _traded(self, environment_ids: list[str]) -> list[str]:
        return sorted(
            set(
                Trade.objects.filter(environment_id__in=environment_ids).values_list(
                    "environment_id", flat=True
                )
            )
        )

    def _refuse_delete(self, request: HttpRequest, traded: list[str]) -> None:
        self.message_user(
            request,
            f"Not deleted: {', '.join(traded)} ha{'s' if len(traded) == 1 else 've'} trades, "
            "which stay for history and rewards. Close trading or start a new round instead.",
            messages.ERROR,
        )

    @admin.action(permissions=["delete"], description="Delete selected environments")
    def delete_selected(
        self, request: HttpRequest, queryset: QuerySet[Environment]
    ) -> HttpResponse | None:
        traded = self._traded(list(queryset.values_list("pk", flat=True)))
        if traded:
            self._refuse_delete(request, traded)
            return None
        return delete_selected(self, request, queryset)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        environment_id = unquote(object_id)
        if self._traded([environment_id]):
            self._refuse_delete(request, [environment_id])
            url = reverse("admin:environments_environment_change", args=[quote(environment_id)])
            return HttpResponseRedirect(url)
        return super().delete_view(request, object_id, extra_context)


for _field in MONEY_FIELDS:
    setattr(EnvironmentAdmin, _field + SHOWN, _money_display(_field))


@admin.register(Position)
class PositionAdmin(LedgerAdmin):
    list_display = (
        "wallet_shown",
        "environment_shown",
        "sol_display",
        "tokens_display",
        "last_traded_at",
    )
    wallet_shown = wallet_column
    environment_shown = environment_column
    list_filter = ("environment",)
    search_fields = ("wallet", "environment__id", "environment__name")
    list_select_related = ("environment",)
    readonly_fields = ("sol_balance_shown", "token_balance_shown")

    @admin.display(description="SOL", ordering="sol_balance")
    def sol_display(self, obj: Position) -> str:
        return sol(obj.sol_balance)

    @admin.display(description="tokens", ordering="token_balance")
    def tokens_display(self, obj: Position) -> str:
        return tokens(obj.token_balance)

    @admin.display(description="SOL balance")
    def sol_balance_shown(self, obj: Position) -> str:
        return with_raw(sol(obj.sol_balance), obj.sol_balance, "lamports")

    @admin.display(description="token balance")
    def token_balance_shown(self, obj: Position) -> str:
        return with_raw(tokens(obj.token_balance), obj.token_balance, "raw units")


@admin.register(RoundPosition)
class RoundPositionAdmin(LedgerAdmin):
    """Balances as each round ended: history, read-only."""

    list_display = (
        "wallet_shown",
        "environment_shown",
        "round",
        "sol_display",
        "tokens_display",
        "ended_at",
    )
    wallet_shown = wallet_column
    environment_shown = environment_column
    list_filter = ("environment", "round")
    search_fields = ("wallet", "environment__id", "environment__name")
    list_select_related = ("environment",)

    @admin.display(description="SOL", ordering="sol_balance")
    def sol_display(self, obj: RoundPosition) -> str:
        return sol(obj.sol_balance)

    @admin.display(description="tokens", ordering="token_balance")
    def tokens_display(self, obj: RoundPosition) -> str:
        return tokens(obj.token_balance)


@admin.register(ChatMessage)
class ChatMessageAdmin(admin.ModelAdmin[ChatMessage]):
    list_display = ("sequence", "environment", "wallet", "message", "hidden", "created_at")
    list_filter = ("hidden", "environment")
    search_fields = ("message", "wallet", "environment__id")
    list_select_related = ("environment",)
    actions = ("hide_messages", "unhide_messages")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Hide selected messages")
    def hide_messages(self, request: HttpRequest, queryset: QuerySet[ChatMessage]) -> None:
        changed = chat_set_hidden(
            message_ids=list(queryset.values_list("pk", flat=True)), hidden=True
        )
        self.message_user(request, f"Hid {changed} message(s).", messages.SUCCESS)

    @admin.action(description="Unhide selected messages")
    def unhide_messages(self, request: HttpRequest, queryset: QuerySet[ChatMessage]) -> None:
        changed = chat_set_hidden(
            message_ids=list(queryset.values_list("pk", flat=True)), hidden=False
        )
        self.message_user(request, f"Unhid {changed} message(s).", messages.SUCCESS)
