from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from idempotency.selectors import receipts_expired
from idempotency.services import receipts_purge, window_start


class Command(BaseCommand):
    help = (
        "Delete the receipts of idempotent requests older than FUNPUMP_IDEMPOTENCY_WINDOW "
        "(they no longer count). Run it daily, e.g. from cron."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        cutoff = window_start()
        window = settings.FUNPUMP_IDEMPOTENCY_WINDOW
        if options["dry_run"]:
            count = receipts_expired(cutoff)
            self.stdout.write(f"Dry run: {count} receipt(s) older than {window} s would go.")
            return
        deleted = receipts_purge(before=cutoff)
        message = f"Deleted {deleted} receipt(s) older than {window} s."
        self.stdout.write(self.style.SUCCESS(message))
