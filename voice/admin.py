from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from kernel.admin import LedgerAdmin
from voice.models import VoiceCommand, VoiceSession
from voice.services import voice_session_end


class VoiceCommandInline(admin.TabularInline[VoiceCommand, VoiceSession]):
    model = VoiceCommand
    fields = ("created_at", "text", "intent", "parameters", "confidence", "audio_seconds", "source")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: VoiceSession | None = None) -> bool:
        return False


@admin.register(VoiceSession)
class VoiceSessionAdmin(LedgerAdmin):
    list_display = (
        "id",
        "wallet",
        "language",
        "started_at",
        "ended_at",
        "end_reason",
        "utterances",
        "commands",
        "environment",
    )
    list_filter = ("language", "end_reason", "started_at")
    search_fields = ("id", "wallet", "room")
    list_select_related = ("environment",)
    inlines = (VoiceCommandInline,)
    actions = ("end_sessions",)

    @admin.action(description="End selected sessions")
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[VoiceSession]) -> None:
        ended = sum(
            voice_session_end(session_id=session.id, wallet=session.wallet, reason="admin")
            for session in queryset.filter(ended_at=None)
        )
        self.message_user(request, f"Ended {ended} session(s).", messages.SUCCESS)


@admin.register(VoiceCommand)
class VoiceCommandAdmin(LedgerAdmin):
    list_display = ("id", "created_at", "session", "text", "intent", "confidence", "source")
    list_filter = ("intent", "source", "created_at")
    search_fields = ("text", "session__wallet", "session__id")
    list_select_related = ("session",)
