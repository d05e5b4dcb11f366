from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from environments.models import Environment
from environments.services import CurveConstants, environment_create
from funpump.errors import DomainError
from trading import curve


class Command(BaseCommand):
    help = "Create a virtual environment (a bonding curve with its own balances and chat)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Display name, 1-64 characters.")
        parser.add_argument("--id", dest="environment_id", help="Fixed id (letters, digits, _-.).")
        parser.add_argument(
            "--if-missing",
            action="store_true",
            help="Do nothing when an environment with --id already exists.",
        )
        parser.add_argument("--token-mint", help="Base58 mint it mirrors; generated if omitted.")
        parser.add_argument("--launched-by", default="", help="Launcher wallet, if any.")
        parser.add_argument("--closed", action="store_true", help="Create it closed to trading.")
        parser.add_argument("--virtual-sol", type=int, default=curve.DEFAULT_VIRTUAL_SOL)
        parser.add_argument("--virtual-token", type=int, default=curve.DEFAULT_VIRTUAL_TOKEN)
        parser.add_argument("--real-token", type=int, default=curve.DEFAULT_REAL_TOKEN)
        parser.add_argument("--total-supply", type=int, default=curve.DEFAULT_TOTAL_SUPPLY)
        parser.add_argument("--protocol-fee-bps", type=int, default=curve.DEFAULT_PROTOCOL_FEE_BPS)
        parser.add_argument("--creator-fee-bps", type=int, default=curve.DEFAULT_CREATOR_FEE_BPS)
        parser.add_argument(
            "--starting-sol",
            type=int,
            default=curve.DEFAULT_STARTING_SOL,
            help="Starting balance of every participant, lamports.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        environment_id = options["environment_id"]
        if environment_id is not None:
            existing = Environment.objects.filter(pk=environment_id).first()
            if existing is not None:
                if options["if_missing"]:
                    self.stdout.write(f"Environment {existing.id} already exists.")
                    return
                raise CommandError(f"environment {environment_id} already exists")
        constants = CurveConstants(
            virtual_sol=options["virtual_sol"],
            virtual_token=options["virtual_token"],
            real_token=options["real_token"],
            total_supply=options["total_supply"],
            protocol_fee_bps=options["protocol_fee_bps"],
            creator_fee_bps=options["creator_fee_bps"],
            starting_sol_balance=options["starting_sol"],
        )
        try:
            environment = environment_create(
                name=options["name"],
                token_mint=options["token_mint"],
                launched_by=options["launched_by"],
                constants=constants,
                environment_id=environment_id,
                is_open=not options["closed"],
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Created environment {environment.id} ({environment.name}), "
                f"token mint {environment.token_mint}."
            )
        )
