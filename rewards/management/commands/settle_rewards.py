from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rewards.services import SettlementSummary, settle_rewards


class Command(BaseCommand):
    help = (
        "Settle every trade not yet settled: creator fees to launchers, a share of the protocol "
        "fee back to traders at their current tier. Safe to run twice, even at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Print the summary only.")
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Trades per transaction (default 1000)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if not 1 <= batch_size <= 100_000:
            raise CommandError("--batch-size must be between 1 and 100000")

        def progress(summary: SettlementSummary) -> None:
            self.stdout.write(f"  {summary.trades} trades settled so far")

        summary = settle_rewards(
            run_by=getpass.getuser(),
            batch_size=batch_size,
            dry_run=options["dry_run"],
            progress=progress if options["verbosity"] >= 1 else None,
        )
        title = "Dry run: nothing was written" if options["dry_run"] else "Settled"
        rows = [
            ("trades", summary.trades),
            ("ledger entries", summary.entries),
            ("wallets credited", len(summary.wallets)),
            ("lamports to launchers", summary.to_launchers),
            ("lamports to traders", summary.to_traders),
            ("lamports in all", summary.total),
        ]
        self.stdout.write(self.style.SUCCESS(title))
        for label, value in rows:
            self.stdout.write(f"  {label:<24}{value:>20,}")
