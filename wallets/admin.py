from __future__ import annotations

from django.contrib import admin

from kernel.admin import LedgerAdmin
from wallets.models import AuthChallenge


@admin.register(AuthChallenge)
class AuthChallengeAdmin(LedgerAdmin):
    """Sign-in challenges, read-only: who asked to sign in, and whether the nonce was used."""

    list_display = ("wallet", "created_at", "expires_at", "used_at")
    list_filter = ("used_at",)
    search_fields = ("wallet",)
    date_hierarchy = "created_at"
