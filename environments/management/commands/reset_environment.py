from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from environments.models import Environment
from environments.rounds import round_start
from kernel.admin import sol
from protocol.errors import DomainError


class Command(BaseCommand):
    help = (
        "End an environment's round and start a new one: positions archived and reset to the "
        "starting balance, the market back at its initial curve. Trades and chat are kept; "
        "joined clients get ROUND_STARTED and a fresh ENVIRONMENT_STATE."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("environment_ids", nargs="+", metavar="ID", help="Environment id(s).")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Say what would be reset without changing anything.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ids: list[str] = options["environment_ids"]
        known = set(Environment.objects.filter(pk__in=ids).values_list("pk", flat=True))
        unknown = [environment_id for environment_id in ids if environment_id not in known]
        if unknown:
            raise CommandError(f"no environment with id {', '.join(unknown)}")
        for environment_id in ids:
            if options["dry_run"]:
                environment = Environment.objects.get(pk=environment_id)
                count = environment.positions.count()
                self.stdout.write(
                    f"Would start round {environment.round + 1} of {environment} "
                    f"({count} position(s) reset). Nothing changed (--dry-run)."
                )
                continue
            try:
                started = round_start(environment_id=environment_id)
            except DomainError as exc:
                raise CommandError(exc.message) from exc
            assert started is not None
            environment = started.environment
            self.stdout.write(
                self.style.SUCCESS(
                    f"Started round {environment.round} of {environment}: "
                    f"{started.positions} position(s) archived and reset to "
                    f"{sol(environment.starting_sol_balance)}; the market is back at "
                    "its initial curve."
                )
            )
