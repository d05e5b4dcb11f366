from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from environments.models import Environment
from environments.services import environment_create
from protocol.errors import DomainError
from trading.state import CurveConstants

# Curve constants: flag, CurveConstants attribute (defaults from there: pump.fun's), unit.
CONSTANT_OPTIONS = [
    ("--virtual-sol", "virtual_sol", "lamports"),
    ("--virtual-token", "virtual_token", "raw units"),
    ("--real-token", "real_token", "raw units"),
    ("--total-supply", "total_supply", "raw units"),
    ("--protocol-fee-bps", "protocol_fee_bps", "basis points"),
    ("--creator-fee-bps", "creator_fee_bps", "basis points"),
    ("--starting-sol", "starting_sol_balance", "each participant's starting balance, lamports"),
]


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
        defaults = CurveConstants()
        for flag, name, unit in CONSTANT_OPTIONS:
            parser.add_argument(
                flag, dest=name, type=int, default=getattr(defaults, name), help=unit
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
        constants = CurveConstants(**{name: options[name] for _, name, _ in CONSTANT_OPTIONS})
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
