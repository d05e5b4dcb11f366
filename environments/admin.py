from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from environments import presence
from environments.models import ChatMessage, Environment, Position
from environments.services import chat_set_hidden, environment_create, environment_set_open
from kernel.admin import LedgerAdmin
from protocol.errors import DomainError
from trading import curve, state
from trading.state import CurveConstants

STATE_FIELDS = (*state.RESERVE_FIELDS, "sequence", "launched_by", "created_at")
CONSTANT_FIELDS = tuple(state.CONSTANT_FIELDS.values())


class EnvironmentForm(forms.ModelForm[Environment]):
    """Checks a new environment's curve constants as the service will, before saving."""

    class Meta:
        model = Environment
        fields = ("name", "token_mint", "is_open", *CONSTANT_FIELDS)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance._state.adding and all(name in data for name in CONSTANT_FIELDS):
            try:
                CurveConstants.from_fields(data).validate()
            except DomainError as exc:
                raise forms.ValidationError(exc.message) from None
        return data


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin[Environment]):
    form = EnvironmentForm
    list_display = (
        "name",
        "id",
        "token_mint",
        "is_open",
        "complete_display",
        "price",
        "virtual_sol_reserves",
        "virtual_token_reserves",
        "participants",
        "sequence",
        "created_at",
    )
    list_filter = ("is_open", "created_at")
    search_fields = ("id", "name", "token_mint", "launched_by")
    actions = ("close_trading", "reopen_trading")
    fieldsets = (
        (None, {"fields": ("name", "token_mint", "is_open")}),
        ("Curve constants (fixed at creation)", {"fields": CONSTANT_FIELDS}),
        ("Live state", {"fields": STATE_FIELDS}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Environment | None = None) -> Any:
        if obj is None:
            return STATE_FIELDS
        return STATE_FIELDS + CONSTANT_FIELDS + ("token_mint",)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        from environments.services import generate_mint

        return {"token_mint": generate_mint()}

    @admin.display(description="complete", boolean=True)
    def complete_display(self, obj: Environment) -> bool:
        return obj.complete

    @admin.display(description="price (SOL/token)")
    def price(self, obj: Environment) -> str:
        return curve.format_price(obj.curve.spot_price)

    @admin.display(description="participants")
    def participants(self, obj: Environment) -> int:
        return presence.backend().count(obj.id)

    def save_model(self, request: HttpRequest, obj: Environment, form: Any, change: bool) -> None:
        if change:
            if "is_open" in form.changed_data:
                environment_set_open(environment_id=obj.id, is_open=obj.is_open)
            if "name" in form.changed_data:
                Environment.objects.filter(pk=obj.pk).update(name=obj.name)
            return
        created = environment_create(
            name=obj.name,
            token_mint=obj.token_mint or None,
            is_open=obj.is_open,
            constants=CurveConstants.from_fields(form.cleaned_data),
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

    @admin.action(description="Close trading")
    def close_trading(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        self._set_open(request, queryset, False)

    @admin.action(description="Reopen trading")
    def reopen_trading(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        self._set_open(request, queryset, True)


@admin.register(Position)
class PositionAdmin(LedgerAdmin):
    list_display = ("wallet", "environment", "sol_balance", "token_balance", "joined_at")
    list_filter = ("environment",)
    search_fields = ("wallet", "environment__id", "environment__name")
    list_select_related = ("environment",)


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
