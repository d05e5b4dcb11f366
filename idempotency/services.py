"""Idempotent requests: a mutating request runs at most once per wallet and ``requestId``.

A service that changes something calls :func:`run_once` with the request's key. The key's
receipt is inserted first, in the service's own transaction, so the unique key
``(wallet, request_id, item)`` decides between two copies of one request whatever connection or
server process they come through: on PostgreSQL the second insert waits for the first
transaction, then fails once it commits (or goes on if it rolled back). The loser is answered
with the winner's stored answer (:class:`Replay`). Only requests that changed something leave a
receipt: a refusal rolls its receipt back, so a retry of a refused request simply runs again.

Receipts older than ``FUNPUMP_IDEMPOTENCY_WINDOW`` seconds no longer count: a request that meets
one replaces it, and ``python manage.py purge_receipts`` deletes the rest.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from idempotency.models import Receipt
from idempotency.selectors import receipt_find
from kernel.db import model_field, sql_column, sql_table
from protocol.errors import DomainError, ErrorCode

T = TypeVar("T")
ATTEMPTS = 3  # a stale receipt replaced, or a concurrent copy rolled back, then a clean run


@dataclass(frozen=True, slots=True)
class RequestKey:
    """Who asked, under which ``requestId`` (and batch position), for what."""

    wallet: str
    request_id: str
    kind: str
    params: Mapping[str, Any]
    item: int = 0

    @property
    def fingerprint(self) -> str:
        canonical = json.dumps(
            dict(self.params), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def request_key(
    *,
    wallet: str,
    request_id: str | None,
    kind: str,
    params: Mapping[str, Any],
    item: int = 0,
) -> RequestKey | None:
    """The request's key, or None when it carries no ``requestId`` (then it is not deduplicated)."""
    if not request_id or not wallet:
        return None
    return RequestKey(wallet=wallet, request_id=request_id, kind=kind, params=params, item=item)


class Replay(Exception):
    """The request already ran: its original answer is to be sent again, marked as a replay."""

    def __init__(self, kind: str, answer: dict[str, Any]) -> None:
        super().__init__(f"{kind} already executed")
        self.kind = kind
        self.answer = answer

    @property
    def data(self) -> dict[str, Any]:
        """The original answer's data with the added ``replay`` marker."""
        return {**self.answer, "replay": True}


def window_start() -> datetime:
    """Receipts created before this no longer count."""
    return timezone.now() - timedelta(seconds=settings.FUNPUMP_IDEMPOTENCY_WINDOW)


def run_once(key: RequestKey | None, work: Callable[[Receipt | None], T]) -> T:
    """Run ``work`` in one transaction together with the insert of ``key``'s receipt.

    ``work`` gets the receipt (None without a key) and stores its answer with
    :func:`receipt_answer`. A copy of a request that already ran raises :class:`Replay`; the same
    ``requestId`` reused for a different request raises ``INVALID_MESSAGE`` naming ``requestId``;
    in both cases nothing is executed.
    """
    for _attempt in range(ATTEMPTS):
        recorded = False
        try:
            with transaction.atomic():
                receipt = None
                if key is not None:
                    receipt = _receipt_insert(key)
                recorded = True
                return work(receipt)
        except IntegrityError:
            if key is None or recorded:
                raise  # another constraint: not about this request's key
        _answer_repeat(key)
    raise DomainError(ErrorCode.INTERNAL_ERROR, "the request could not be recorded")


def _answer_repeat(key: RequestKey) -> None:
    """The key's receipt exists: raise its replay or the reuse error, or clear a stale one."""
    existing = receipt_find(wallet=key.wallet, request_id=key.request_id, item=key.item)
    if existing is None:
        return  # the copy that held the key rolled back: run this one
    if existing.created_at < window_start():
        Receipt.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
        return
    if existing.kind != key.kind or existing.fingerprint != key.fingerprint:
        raise DomainError(
            ErrorCode.INVALID_MESSAGE,
            "requestId was already used for a different request",
            {"field": "requestId", "usedFor": existing.kind},
        )
    raise Replay(existing.kind, existing.answer)


def receipt_answer(receipt: Receipt | None, answer: dict[str, Any]) -> None:
    """Store the answer the request gets now, to be sent again to its repeats."""
    if receipt is None:
        return
    receipt.answer = answer
    value = _prepared(_field("answer"), answer)
    with connection.cursor() as cursor:
        cursor.execute(_statements(connection.vendor).answer, [value, receipt.pk])


def receipts_purge(*, before: datetime | None = None, batch_size: int = 10_000) -> int:
    """Delete receipts created before ``before`` (default: the window's start), in batches so
    no transaction holds many rows; returns how many were deleted."""
    cutoff = before or window_start()
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                Receipt.objects.filter(created_at__lt=cutoff)
                .order_by("created_at")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return deleted
            deleted += Receipt.objects.filter(pk__in=ids).delete()[0]


# Every trade, chat line, claim and launch with a requestId writes its receipt twice in its
# transaction: plain statements, built once, spare both writes the ORM's query building.


@dataclass(frozen=True, slots=True)
class _Statements:
    insert: str
    answer: str


RECEIPT_COLUMNS = ("wallet", "request_id", "item", "kind", "fingerprint", "answer", "created_at")


@functools.cache
def _statements(vendor: str) -> _Statements:
    """The receipt's SQL for ``vendor`` (the cache key), from the model's metadata."""
    table = sql_table(Receipt)
    columns = ", ".join(sql_column(Receipt, name) for name in RECEIPT_COLUMNS)
    placeholders = ", ".join(["%s"] * len(RECEIPT_COLUMNS))
    pk, answer = sql_column(Receipt, "id"), sql_column(Receipt, "answer")
    return _Statements(
        insert=f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) RETURNING {pk}",  # noqa: S608
        answer=f"UPDATE {table} SET {answer} = %s WHERE {pk} = %s",  # noqa: S608
    )


def _field(name: str) -> models.Field[Any, Any]:
    return model_field(Receipt, name)


def _prepared(field: models.Field[Any, Any], value: Any) -> Any:
    return field.get_db_prep_save(value, connection)


def _receipt_insert(key: RequestKey) -> Receipt:
    """Insert ``key``'s receipt (no answer yet); a copy that holds the key makes this raise
    ``IntegrityError``, or wait for the copy's transaction first."""
    receipt = Receipt(
        wallet=key.wallet,
        request_id=key.request_id,
        item=key.item,
        kind=key.kind,
        fingerprint=key.fingerprint,
        answer={},
        created_at=timezone.now(),
    )
    values = [_prepared(_field(name), getattr(receipt, name)) for name in RECEIPT_COLUMNS]
    with connection.cursor() as cursor:
        cursor.execute(_statements(connection.vendor).insert, values)
        row = cursor.fetchone()
    receipt.pk = row[0]
    return receipt
