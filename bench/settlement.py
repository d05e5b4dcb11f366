"""Benchmark: settle_rewards over many unsettled trades (default 1,000,000) on PostgreSQL.

Inserts the trades with one INSERT ... SELECT generate_series, then runs the settlement in
this process and reports wall time, trades per second and peak memory (the process's maximum
RSS) as a Markdown table. Everything it creates is
deleted afterwards. Usage: ``DATABASE_URL=postgres://... python bench/settlement.py [N]``.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "funpump.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from environments.models import Environment  # noqa: E402
from environments.services import environment_create, generate_mint  # noqa: E402
from rewards.models import RewardAccount, RewardEntry, Settlement  # noqa: E402
from rewards.services import settle_rewards  # noqa: E402
from trading.models import Trade  # noqa: E402

WALLETS = 1000


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    if connection.vendor != "postgresql":
        print("| settlement | skipped | needs PostgreSQL (set DATABASE_URL) |")
        return
    settings.DEBUG = False  # no query log: it would grow with every batch
    others = Trade.objects.filter(settled_at__isnull=True).count()
    if others:
        print(
            f"| settlement | skipped | the database has {others:,} unsettled trades of its own: "
            "run against a scratch database |"
        )
        return
    environment = environment_create(name="Settlement bench", launched_by=generate_mint())
    wallets = [generate_mint() for _ in range(WALLETS)]
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")  # bulk work, not a request
        # Trades with plausible fees, spread over WALLETS traders; sequences 1..count.
        cursor.execute(
            f"""
            INSERT INTO {Trade._meta.db_table} (environment_id, wallet, is_buy, amount,
                sol_amount, token_amount, protocol_fee, creator_fee, sequence,
                virtual_sol_after, virtual_token_after, created_at)
            SELECT %s, (%s::text[])[1 + (n %% %s)], true, 1000000000, 987654320,
                34199203154141, 9382717, 2962963, n, 30987654320, 1038800796845859, now()
            FROM generate_series(1, %s) AS n
            """,  # noqa: S608 (table name from the model, values bound)
            [environment.id, wallets, WALLETS, count],
        )
    inserted = time.perf_counter() - started
    unsettled_before = Trade.objects.filter(settled_at__isnull=True).count()

    started = time.perf_counter()
    summary = settle_rewards(run_by="bench", batch_size=1000)
    elapsed = time.perf_counter() - started
    max_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = [
        ("trades inserted (generate_series) s", f"{inserted:.1f}"),
        ("unsettled trades before", f"{unsettled_before:,}"),
        ("trades settled", f"{summary.trades:,}"),
        ("ledger entries", f"{summary.entries:,}"),
        ("settlement wall s", f"{elapsed:.1f}"),
        ("trades/s", f"{summary.trades / elapsed:,.0f}"),
        ("process max RSS MiB", f"{max_rss_mib:.0f}"),
    ]
    print("| scenario | metric | value |\n|---|---|---|")
    for metric, value in rows:
        print(f"| settlement | {metric} | {value} |")

    # Leave the database as it was.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 0")
        RewardEntry.objects.filter(trade__environment=environment).delete()
        Settlement.objects.filter(run_by="bench").delete()
        RewardAccount.objects.filter(wallet__in=[*wallets, environment.launched_by]).delete()
        Trade.objects.filter(environment=environment).delete()
        Environment.objects.filter(pk=environment.pk).delete()


if __name__ == "__main__":
    main()
