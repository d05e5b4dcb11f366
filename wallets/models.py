from __future__ import annotations

from django.db import models


class AuthChallenge(models.Model):
    """A sign-in nonce issued to a wallet: valid for a few minutes, usable once."""

    nonce = models.CharField(max_length=64, unique=True)
    wallet = models.CharField(max_length=44, db_index=True)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires_at"])]

    def __str__(self) -> str:
        return f"challenge for {self.wallet}"
