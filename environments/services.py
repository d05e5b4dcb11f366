"""Write-side of environments: create, open and close, join, chat, moderate."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, replace
from typing import Any

import base58
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

import protocol
from environments import presence
from environments.locks import lock_environment, lock_position
from environments.models import ChatMessage, Environment, Position, environment_id_validator
from environments.rounds import round_due, round_start
from environments.selectors import chat_view, environment_state, history_forget
from idempotency.models import Receipt
from idempotency.services import receipt_answer, request_key, run_once
from kernel.db import ModelRows, sql_column, sql_table
from kernel.realtime import Event, publish_on_commit, rewards_key, touch_on_commit
from protocol.addresses import is_public_key
from protocol.errors import DomainError, ErrorCode
from trading.state import CurveConstants

MAX_NAME = 64


def generate_mint() -> str:
    """A random base58 address for a purely virtual token."""
    return base58.b58encode(secrets.token_bytes(32)).decode()


def _check_mint(token_mint: str) -> str:
    if is_public_key(token_mint):
        return token_mint
    raise DomainError(ErrorCode.INVALID_MESSAGE, "tokenMint must be a base58 address (32 bytes)")


def environment_create(
    *,
    name: str,
    token_mint: str | None = None,
    launched_by: str = "",
    constants: CurveConstants | None = None,
    environment_id: str | None = None,
    is_open: bool = True,
    new_round_after: int | None = None,
    request_id: str | None = None,
) -> Environment:
    """Create an environment with a fresh curve; ``launched_by`` is the launching wallet.

    ``new_round_after`` (seconds): start a new round by itself once the market has graduated
    and been quiet that long (:mod:`environments.rounds`); None: only operators start rounds.

    The launcher's ``REWARD_UPDATE`` subscribers are told after commit. With ``request_id`` a
    wallet launches at most once per id: a repeat raises :class:`idempotency.services.Replay`
    whose answer names the environment.
    """
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise DomainError(ErrorCode.INVALID_MESSAGE, f"name must be 1-{MAX_NAME} characters")
    constants = constants or CurveConstants()
    constants.validate()
    if new_round_after is not None and new_round_after <= 0:
        raise DomainError(ErrorCode.INVALID_MESSAGE, "new_round_after must be positive seconds")
    fields: dict[str, Any] = {"new_round_after": new_round_after}
    if environment_id is not None:
        try:
            environment_id_validator(environment_id)
        except ValidationError as exc:
            raise DomainError(ErrorCode.INVALID_MESSAGE, exc.messages[0]) from None
        fields["id"] = environment_id
    fields.update(
        name=name,
        token_mint=_check_mint(token_mint) if token_mint else generate_mint(),
        launched_by=launched_by,
        is_open=is_open,
        **constants.fields(),
    )
    key = request_key(
        wallet=launched_by,
        request_id=request_id,
        kind="LAUNCH",
        params={"name": name, "tokenMint": token_mint},
    )

    def create(receipt: Receipt | None) -> Environment:
        environment = Environment.objects.create(**fields)
        if launched_by:  # after the insert, so the update it pushes counts this launch
            touch_on_commit(rewards_key(launched_by))
        receipt_answer(receipt, {"id": environment.id})
        return environment

    return run_once(key, create)


def environment_set_open(*, environment_id: str, is_open: bool) -> Environment:
    """Open or close an environment to trading (operators)."""
    with transaction.atomic():
        environment = lock_environment(environment_id)
        if environment.is_open != is_open:
            environment.is_open = is_open
            environment.save(update_fields=["is_open"])
        return environment


def environment_set_limits(
    *,
    environment_id: str,
    starting_sol_balance: int,
    min_trade_lamports: int,
    max_trade_lamports: int | None,
    max_price_impact_bps: int | None,
    new_round_after: int | None,
) -> Environment:
    """Change an environment's trading limits, starting balance (new participants, and
    everyone at the next round) and automatic new rounds (operators); checked as at creation."""
    changes: dict[str, int | None] = {
        "starting_sol_balance": starting_sol_balance,
        "min_trade_lamports": min_trade_lamports,
        "max_trade_lamports": max_trade_lamports,
        "max_price_impact_bps": max_price_impact_bps,
    }
    if new_round_after is not None and new_round_after <= 0:
        raise DomainError(ErrorCode.INVALID_MESSAGE, "new_round_after must be positive seconds")
    with transaction.atomic():
        environment = lock_environment(environment_id)
        replace(
            environment.constants,
            starting_sol_balance=starting_sol_balance,
            min_trade_lamports=min_trade_lamports,
            max_trade_lamports=max_trade_lamports,
            max_price_impact_bps=max_price_impact_bps,
        ).validate()
        changes["new_round_after"] = new_round_after
        changed = [name for name, value in changes.items() if getattr(environment, name) != value]
        for field in changed:
            setattr(environment, field, changes[field])
        if changed:
            environment.save(update_fields=changed)
        return environment


@dataclass(frozen=True)
class _JoinStatements:
    environment: ModelRows[Environment]
    position: ModelRows[Position]
    open: str  # the position with the starting balance, unless the wallet has one
    read: str  # the environment and the wallet's position, if any


@functools.cache
def _join_statements(vendor: str) -> _JoinStatements:
    e, p = Environment, Position
    environment, position = ModelRows(e, "e"), ModelRows(p, "p")
    env_id, pos_env = sql_column(e, "id"), sql_column(p, "environment")
    wallet = sql_column(p, "wallet")
    opened = ", ".join(
        sql_column(p, name)
        for name in ("environment", "wallet", "sol_balance", "token_balance", "joined_at")
    )
    return _JoinStatements(
        environment=environment,
        position=position,
        open=(
            f"INSERT INTO {sql_table(p)} ({opened}, {sql_column(p, 'updated_at')})"  # noqa: S608
            f" SELECT {env_id}, %s, {sql_column(e, 'starting_sol_balance')}, 0, %s, %s"
            f" FROM {sql_table(e)} WHERE {env_id} = %s"
            f" ON CONFLICT ({pos_env}, {wallet}) DO NOTHING"
        ),
        read=(
            f"SELECT {environment.columns}, {position.columns} FROM {sql_table(e)} e"  # noqa: S608
            f" LEFT JOIN {sql_table(p)} p ON p.{pos_env} = e.{env_id} AND p.{wallet} = %s"
            f" WHERE e.{env_id} = %s"
        ),
    )


def environment_join(*, environment_id: str, wallet: str) -> tuple[Environment, Position]:
    """Read the environment and the wallet's position, opening one with the starting balance.

    Joining again changes nothing; a closed environment can still be joined to watch it. Two
    statements, whoever else joins at the same moment: the position is opened unless it exists
    (a concurrent first join of the same wallet opens it once), then both rows are read.
    """
    statements = _join_statements(connection.vendor)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(statements.open, [wallet, now, now, environment_id])
        cursor.execute(statements.read, [wallet, environment_id])
        row = cursor.fetchone()
    if row is None:
        raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found")
    split = len(statements.environment)
    environment = statements.environment.instance(row[:split])
    position = statements.position.instance(row[split:])
    position._state.fields_cache["environment"] = environment
    return environment, position


@dataclass(frozen=True, slots=True)
class ChatPosted:
    """What posting did: the stored line and the sender's own copy of its ``CHAT_MESSAGE``."""

    line: ChatMessage
    own: protocol.ChatMessageView | dict[str, Any]

    @property
    def sequence(self) -> int:
        """The environment's sequence the line committed under."""
        return self.line.sequence


def chat_post(
    *,
    environment_id: str,
    wallet: str,
    message: str,
    request_id: str | None = None,
    request_item: int = 0,
) -> ChatPosted:
    """Store a chat line under the environment's next sequence and publish it after commit.

    With ``request_id`` the line is posted at most once: a repeat raises
    :class:`idempotency.services.Replay` carrying the ``CHAT_MESSAGE`` first sent.
    """
    key = request_key(
        wallet=wallet,
        request_id=request_id,
        item=request_item,
        kind="CHAT_MESSAGE",
        params={"environmentId": environment_id, "message": message},
    )

    def post(receipt: Receipt | None) -> ChatPosted:
        chat = _chat_store(environment_id, wallet, message)
        line = chat_view(chat)  # the same builder reads it back after a Redis loss
        publish_on_commit(Event(environment_id, chat.sequence, "CHAT_MESSAGE", line))
        receipt_answer(receipt, protocol.dump(line))
        return ChatPosted(chat, line)  # the sender's copy is the public one

    return run_once(key, post)


@dataclass(frozen=True)
class _ChatStatements:
    sequence: str  # the environment's next sequence, if the wallet has joined it
    insert: str


CHAT_COLUMNS = ("environment", "wallet", "message", "sequence", "hidden", "created_at")


@functools.cache
def _chat_statements(vendor: str) -> _ChatStatements:
    e, p, c = Environment, Position, ChatMessage
    sequence = sql_column(e, "sequence")
    columns = ", ".join(sql_column(c, name) for name in CHAT_COLUMNS)
    return _ChatStatements(
        # An UPDATE locks the row as a trade does (NO KEY UPDATE), in the same order.
        sequence=(
            f"UPDATE {sql_table(e)} SET {sequence} = {sequence} + 1"  # noqa: S608
            f" WHERE {sql_column(e, 'id')} = %s AND EXISTS (SELECT 1 FROM {sql_table(p)}"
            f" WHERE {sql_column(p, 'environment')} = %s AND {sql_column(p, 'wallet')} = %s)"
            f" RETURNING {sequence}"
        ),
        insert=(
            f"INSERT INTO {sql_table(c)} ({columns})"  # noqa: S608
            f" VALUES ({', '.join(['%s'] * len(CHAT_COLUMNS))}) RETURNING {sql_column(c, 'id')}"
        ),
    )


def _chat_store(environment_id: str, wallet: str, message: str) -> ChatMessage:
    """Take the environment's next sequence and store the line under it (inside the caller's
    transaction): two statements. Only participants speak."""
    statements = _chat_statements(connection.vendor)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(statements.sequence, [environment_id, environment_id, wallet])
        row = cursor.fetchone()
        if row is None:  # no such environment, or the wallet has not joined it
            lock_position(lock_environment(environment_id), wallet)  # raises the refusal
            return _chat_store(environment_id, wallet, message)  # it joined meanwhile
        [sequence] = row
        values = [environment_id, wallet, message, sequence, False, now]
        cursor.execute(statements.insert, values)
        [pk] = cursor.fetchone()
    chat = ChatMessage(
        pk=pk,
        environment_id=environment_id,
        wallet=wallet,
        message=message,
        sequence=sequence,
        hidden=False,
        created_at=now,
    )
    chat._state.adding, chat._state.db = False, connection.alias  # as if read back
    return chat


def chat_set_hidden(*, message_ids: list[int], hidden: bool) -> int:
    """Hide or show chat lines (operators); returns how many changed."""
    lines = ChatMessage.objects.filter(pk__in=message_ids).exclude(hidden=hidden)
    environment_ids = set(lines.values_list("environment_id", flat=True))
    changed = lines.update(hidden=hidden)
    # Now, and once committed: a join in between may have kept the lines as they were.
    history_forget(environment_ids)
    transaction.on_commit(lambda: history_forget(environment_ids))
    return changed


def participant_enter(
    *, environment_id: str, wallet: str, connection: str
) -> protocol.EnvironmentState:
    """Join for one connection: open the position if needed, mark the wallet present, and
    return its ``ENVIRONMENT_STATE``.

    A room whose new round is due (:func:`environments.rounds.round_due`) starts it first, so
    nobody joins a market that graduated and went quiet long ago.
    """
    environment, position = environment_join(environment_id=environment_id, wallet=wallet)
    if round_due(environment):
        round_start(environment_id=environment.id, only_if_due=True)
        environment, position = environment_join(environment_id=environment_id, wallet=wallet)
    participants = presence.backend().add(environment.id, connection, wallet)
    return environment_state(environment, position, participants=participants)


def participant_state(*, environment_id: str, wallet: str) -> protocol.EnvironmentState:
    """A joined participant's fresh ``ENVIRONMENT_STATE`` (after a new round started)."""
    environment, position = environment_join(environment_id=environment_id, wallet=wallet)
    return environment_state(environment, position)


def participant_counts(environment_ids: list[str]) -> dict[str, int]:
    """Each environment's participants now, across every server process (one round trip)."""
    return presence.backend().counts(environment_ids)


def participant_leave(*, environment_ids: list[str], wallet: str, connection: str) -> None:
    """A connection closed or left: it no longer counts as present."""
    for environment_id in environment_ids:
        presence.backend().remove(environment_id, connection, wallet)
