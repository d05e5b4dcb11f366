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
    ("--pool-lp-fee-bps", "pool_lp_fee_bps", "the pool's LP fee, basis points"),
    ("--pool-protocol-fee-bps", "pool_protocol_fee_bps", "the pool's protocol fee, basis points"),
    ("--pool-creator-fee-bps", "pool_creator_fee_bps", "the pool's creator fee, basis points"),
    ("--migration-fee", "migration_fee", "lamports the migration to the pool keeps"),
    ("--min-trade", "min_trade_lamports", "smallest trade, lamports (0: none)"),
    ("--max-trade", "max_trade_lamports", "largest trade, lamports (0: none)"),
    ("--max-price-impact-bps", "max_price_impact_bps", "largest price impact, bps (0: none)"),
]
# Limits where 0 on the command line means "no limit" (stored as NULL).
UNLIMITED_AT_ZERO = ("max_trade_lamports", "max_price_impact_bps")


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
        parser.add_argument(
            "--new-round-after",
            type=int,
            metavar="SECONDS",
            help="Start a new round by itself once the market has graduated and had no trade "
            "for this long (0: never). With --if-missing it is also set on an existing one.",
        )
        defaults = CurveConstants()
        for flag, name, unit in CONSTANT_OPTIONS:
            default = getattr(defaults, name)
            parser.add_argument(
                flag,
                dest=name,
                type=int,
                default=0 if default is None else default,
                help=f"{unit}; default {default}",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        environment_id = options["environment_id"]
        if environment_id is not None:
            existing = Environment.objects.filter(pk=environment_id).first()
            if existing is not None:
                if options["if_missing"]:
                    self.stdout.write(f"Environment {existing.id} already exists.")
                    self._set_new_round_after(existing, options["new_round_after"])
                    return
                raise CommandError(f"environment {environment_id} already exists")
        values = {name: options[name] for _, name, _ in CONSTANT_OPTIONS}
        for name in UNLIMITED_AT_ZERO:
            values[name] = values[name] or None
        constants = CurveConstants(**values)
        if options["new_round_after"] is not None and options["new_round_after"] < 0:
            raise CommandError("--new-round-after must be 0 or more seconds")
        try:
            environment = environment_create(
                name=options["name"],
                token_mint=options["token_mint"],
                launched_by=options["launched_by"],
                constants=constants,
                environment_id=environment_id,
                is_open=not options["closed"],
                new_round_after=options["new_round_after"] or None,
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Created environment {environment.id} ({environment.name}), "
                f"token mint {environment.token_mint}."
            )
        )

    def _set_new_round_after(self, environment: Environment, seconds: int | None) -> None:
        if seconds is None:
            return
        if seconds < 0:
            raise CommandError("--new-round-after must be 0 or more seconds")
        value = seconds or None
        if environment.new_round_after != value:
            Environment.objects.filter(pk=environment.pk).update(new_round_after=value)
            said = f"after {seconds} quiet seconds" if value else "only when an operator asks"
            self.stdout.write(f"New rounds of {environment.id} now start {said}.")
