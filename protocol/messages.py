"""Every WebSocket message of the FunPump contract, declared once: both directions and limits.

Client messages are validated with these models; server frames are built from them, so that the
published schemas (``protocol.schema``), the docs' tables (``protocol.docs``) and the code cannot
drift apart.

Big integers (lamports, raw token units) travel as decimal strings of digits within u64.
Timestamps are integer milliseconds since the Unix epoch.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from protocol.addresses import is_public_key
from protocol.errors import ErrorCode

U64_MAX = 2**64 - 1
MAX_BATCH = 50
MAX_CHAT_CHARS = 500
MAX_REQUEST_ID_CHARS = 64
U64_DESCRIPTION = "Unsigned 64-bit integer as a decimal string (lamports or raw units)."


def _u64(value: str) -> str:
    if int(value) > U64_MAX:
        raise ValueError("must be at most 18446744073709551615")
    return value


def _wallet(value: str) -> str:
    if not is_public_key(value):
        raise ValueError("must be a base58 Solana public key (32 bytes)")
    return value


def _u64_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError('must be a decimal string of digits, e.g. "1000000000"')
    return value


# Text a client sends must be text: json.loads turns an escaped lone surrogate ("\\ud800") into
# a str that no UTF-8 encoder (the socket, the log, the database) accepts, and PostgreSQL refuses
# NUL. Both are refused while the message is read, naming the field.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
# Chat (docs/protocol.md): line feed and tab are the control characters allowed; bidi embeddings,
# overrides and isolates are refused (they reorder the text around them, which can make a message
# read as something else); zero-width characters are trimmed like white space, so a message of
# nothing else is empty.
_CHAT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BIDI_CONTROL = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
_EDGES = re.compile(r"\A[\s\u200b-\u200d\u2060\ufeff]+|[\s\u200b-\u200d\u2060\ufeff]+\Z")


def _printable(value: str) -> str:
    # Identifiers (environment and session ids, request ids) are printable text, nothing else.
    if not value.isprintable():
        raise ValueError("must be printable text (no control, format or surrogate characters)")
    return value


def _chat_text(value: str) -> str:
    if _SURROGATE.search(value):
        raise ValueError("must be valid UTF-8 text")
    text = _EDGES.sub("", value)
    if _CHAT_CONTROL.search(text):
        raise ValueError("must not contain control characters other than line feed and tab")
    if _BIDI_CONTROL.search(text):
        raise ValueError("must not contain bidirectional embedding, override or isolate controls")
    if not 1 <= len(text) <= MAX_CHAT_CHARS:
        raise ValueError(f"must be 1-{MAX_CHAT_CHARS} characters after trimming")
    return text


U64 = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{1,20}$"),
    BeforeValidator(_u64_text),
    AfterValidator(_u64),
    Field(description=U64_DESCRIPTION),
]
Wallet = Annotated[
    str,
    StringConstraints(min_length=32, max_length=44),
    AfterValidator(_wallet),
    Field(description="Base58 Solana public key."),
]
EnvironmentId = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_printable)
]
Price = Annotated[str, Field(description="Decimal string, SOL per whole token, no exponent.")]
Millis = Annotated[int, Field(description="Milliseconds since the Unix epoch.")]


class _Data(BaseModel):
    """Client payloads: strict types (no coercion of numbers to strings or the like)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Out(BaseModel):
    """Server payloads. A field declared with :func:`_absent_when_none` is left out of the frame
    while it is None; every other field is always sent, null included (``launchedBy``)."""

    model_config = ConfigDict(extra="forbid")


def _is_none(value: object) -> bool:
    return value is None


def _absent_when_none(description: str | None = None) -> Any:
    """An optional server field that a frame carries only when it has a value."""
    return Field(default=None, exclude_if=_is_none, description=description)


_REPLAY = "Added: true on the answer to a repeated requestId (not run again)."


# --- Client → server --------------------------------------------------------------------------


class HeartbeatData(_Data):
    """``HEARTBEAT``: keeps the connection alive; the server answers with its clock."""


class JoinEnvironmentData(_Data):
    """``JOIN_ENVIRONMENT``: enter an environment as the signed-in wallet (``userId``);
    answered by ``ENVIRONMENT_STATE``."""

    environmentId: EnvironmentId
    userId: Wallet


class VirtualTradeData(_Data):
    """``VIRTUAL_TRADE``: buy with a lamport budget (fees included) or sell raw token units;
    answered by the trader's own copy of ``VIRTUAL_TRADE_EXECUTED``."""

    environmentId: EnvironmentId
    amount: U64
    isBuy: bool
    minAmountOut: U64 | None = Field(
        default=None,
        description="Slippage guard: least tokens for a buy, least lamports after fees for a sell.",
    )


class QuoteTradeData(_Data):
    """``QUOTE_TRADE`` (added): what a ``VIRTUAL_TRADE`` with these values would do now, without
    doing it; answered by ``TRADE_QUOTE``. Needs no sign-in or join."""

    environmentId: EnvironmentId
    amount: U64
    isBuy: bool


class ChatMessageData(_Data):
    """``CHAT_MESSAGE``: say something in a joined environment (1-500 characters after trimming,
    see Text); answered by the sender's own copy of ``CHAT_MESSAGE``."""

    environmentId: EnvironmentId
    message: Annotated[str, AfterValidator(_chat_text)]


class SubscribePriceData(_Data):
    """``SUBSCRIBE_PRICE``: a snapshot ``PRICE_UPDATE`` now, then coalesced updates (anonymous
    connections too).

    With ``environmentId`` the price is that environment's curve (``mintAddress`` must be its
    ``tokenMint``); without it, the most recently created open environment carrying the mint.
    """

    mintAddress: Wallet
    environmentId: EnvironmentId | None = None


class UnsubscribePriceData(SubscribePriceData):
    """``UNSUBSCRIBE_PRICE``: stop the updates of a subscription (no reply)."""


class SubscribeRewardsData(_Data):
    """``SUBSCRIBE_REWARDS``: the wallet's ``REWARD_UPDATE`` now, then after every trade, launch,
    settlement or claim that changes it."""

    userId: Wallet


class ClaimRewardsData(_Data):
    """``CLAIM_REWARDS``: move the unclaimed rewards into a payout record; answered by
    ``REWARD_UPDATE``, or ``INSUFFICIENT_BALANCE`` when nothing is unclaimed."""

    userId: Wallet


def _language(value: str) -> str:
    # BCP-47 tags compare case-insensitively; en-US is the one language recognised.
    if value.lower() not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported language; supported: {', '.join(LANGUAGES)}")
    return "en-US"


LANGUAGES = ("en-US",)
SUPPORTED_LANGUAGES = frozenset({"en-us", "en"})
SessionId = Annotated[
    str, StringConstraints(min_length=1, max_length=32), AfterValidator(_printable)
]


class VoiceSessionStartData(_Data):
    """``VOICE_SESSION_START``: open a voice session; answered by ``VOICE_SESSION_READY``.

    A wallet has one session at a time: starting one ends the wallet's other session, on any
    connection. Figures in answers come from ``environmentId`` (added), by default the
    environment this connection joined last.
    """

    userId: Wallet
    preferredLanguage: Annotated[
        str, StringConstraints(min_length=1, max_length=35), AfterValidator(_language)
    ] = Field(default="en-US", description="BCP-47; en-US is the one language supported.")
    environmentId: EnvironmentId | None = None


class VoiceAudioEndData(_Data):
    """``VOICE_AUDIO_END``: the utterance sent as binary frames is over; answered by its final
    ``VOICE_TRANSCRIPTION`` (then ``VOICE_COMMAND`` and ``VOICE_RESPONSE``)."""

    sessionId: SessionId


class VoiceSessionEndData(_Data):
    """``VOICE_SESSION_END``: close the voice session (no reply)."""

    sessionId: SessionId


CLIENT_MESSAGES: dict[str, type[_Data]] = {
    "HEARTBEAT": HeartbeatData,
    "JOIN_ENVIRONMENT": JoinEnvironmentData,
    "VIRTUAL_TRADE": VirtualTradeData,
    "QUOTE_TRADE": QuoteTradeData,
    "CHAT_MESSAGE": ChatMessageData,
    "SUBSCRIBE_PRICE": SubscribePriceData,
    "UNSUBSCRIBE_PRICE": UnsubscribePriceData,
    "SUBSCRIBE_REWARDS": SubscribeRewardsData,
    "CLAIM_REWARDS": ClaimRewardsData,
    "VOICE_SESSION_START": VoiceSessionStartData,
    "VOICE_AUDIO_END": VoiceAudioEndData,
    "VOICE_SESSION_END": VoiceSessionEndData,
}
# Messages that may arrive without data (``{"type": "HEARTBEAT"}``).
DATA_OPTIONAL = frozenset({"HEARTBEAT"})


# --- Server → client --------------------------------------------------------------------------


class HeartbeatReply(_Out):
    """``HEARTBEAT``: the reply, with the server's clock."""

    timestamp: Millis


class Fees(_Out):
    protocolBps: int
    creatorBps: int


Phase = Literal["curve", "pool"]
Fraction = Annotated[
    str, Field(description="Decimal string, a fraction (0.25 is 25 %), no exponent; may be < 0.")
]


class PoolFees(_Out):
    lpBps: int
    protocolBps: int
    creatorBps: int


class Pool(_Out):
    """(added) The constant-product pool a graduated market trades on."""

    solReserves: U64
    tokenReserves: U64
    fees: PoolFees


class TradingLimits(_Out):
    """(added) The operator's limits on one trade in this environment."""

    minTradeSol: U64 = Field(description="Lamports (a sell by its SOL value); 0: no minimum.")
    maxTradeSol: U64 | None = Field(description="Lamports; null: no maximum.")
    maxPriceImpactBps: int | None = Field(description="Basis points; null: no limit.")
    startingBalance: U64 = Field(description="Lamports a new participant starts with.")


class Balance(_Out):
    """A participant's virtual balances."""

    sol: U64
    token: U64


class Reserves(_Out):
    """Virtual SOL and token reserves after a trade."""

    sol: U64
    token: U64


class TradeView(_Out):
    """One trade as clients see it."""

    userId: str
    amount: U64 = Field(description="The request's amount: lamports to buy, raw tokens to sell.")
    price: Price = Field(description="Average fill price, fees excluded.")
    timestamp: Millis
    isBuy: bool
    id: str
    sequence: int
    solAmount: U64
    tokenAmount: U64
    fee: U64 = Field(description="Protocol plus creator fee (plus the LP fee in a pool), lamports.")


class TradeExecuted(_Out):
    """``VIRTUAL_TRADE_EXECUTED``: a trade in a joined environment, to every member; the
    trader's own copy adds ``balance``."""

    trade: TradeView
    newReserves: Reserves
    environmentId: str
    sequence: int
    balance: Balance | None = _absent_when_none(
        "The trader's balances after the trade: on the trader's own copy only."
    )
    unspent: U64 | None = _absent_when_none(
        "Added: lamports of a buy's budget left unspent because the buy completed the curve "
        "(the trader's own copy only)."
    )
    replay: bool | None = _absent_when_none(_REPLAY)


class ChatMessageView(_Out):
    """``CHAT_MESSAGE``: a chat line in a joined environment, to every member; also the shape
    of ``chatHistory`` items."""

    userId: str
    message: str
    timestamp: Millis
    id: str
    environmentId: str
    sequence: int
    replay: bool | None = _absent_when_none(_REPLAY)


class EnvironmentSummary(_Out):
    """An environment without its chat, trades and the caller's balance (the HTTP shape)."""

    id: str
    name: str
    tokenMint: str
    virtualSolReserves: U64
    virtualTokenReserves: U64
    participants: int
    realSolReserves: U64
    realTokenReserves: U64
    complete: bool
    isOpen: bool
    price: Price
    marketCap: U64
    sequence: int
    fees: Fees
    launchedBy: str | None
    createdAt: Millis
    phase: Phase = Field(description="Added: where the market trades, its curve or its pool.")
    pool: Pool | None = Field(description="Added: the pool once graduated, else null.")
    limits: TradingLimits
    round: int = Field(description="Added: the room's round, 1 for the first.")
    lastTradeAt: Millis | None
    volume24h: U64 = Field(description="Added: lamports traded in the last 24 h, fees excluded.")
    trades24h: int
    uniqueTraders24h: int
    priceChange24h: Fraction = Field(
        description="Added: last trade's price against the last one 24 h ago (or the round's "
        "first trade's), as a fraction; 0 without trades."
    )
    progress: Fraction = Field(
        description="Added: the part of the curve's real tokens bought from it (1 once complete)."
    )


class EnvironmentState(EnvironmentSummary):
    """``ENVIRONMENT_STATE``: the reply to ``JOIN_ENVIRONMENT``."""

    chatHistory: list[ChatMessageView]
    trades: list[TradeView]
    balance: Balance
    marketPrice: Price | None = Field(
        default=None, description="The mint's market price from the feed; null when unknown."
    )


class PriceUpdate(_Out):
    """``PRICE_UPDATE``: spot price, 24 h volume and market cap; the reply to a subscription,
    then after trades (at most one per subscription per 100 ms, carrying the latest values)."""

    mintAddress: str
    price: Price
    volume: U64 = Field(description="Lamports traded in the last 24 h, fees excluded.")
    timestamp: Millis
    environmentId: str | None = _absent_when_none(
        "The environment priced; absent for a market-feed price."
    )
    marketCap: U64
    phase: Phase | None = _absent_when_none("Added: an environment's market phase.")
    pool: Pool | None = _absent_when_none("Added: an environment's pool, once graduated.")
    progress: Fraction | None = _absent_when_none(
        "Added: an environment's curve progress, as in ENVIRONMENT_STATE."
    )


class MarketGraduated(_Out):
    """``MARKET_GRADUATED`` (added): the environment's curve completed and its liquidity moved to
    a constant-product pool, in the same transaction as the completing trade; sent once, in
    sequence, to every member."""

    environmentId: str
    sequence: int
    round: int
    pool: Pool
    migrationFee: U64
    timestamp: Millis


class RoundStarted(_Out):
    """``ROUND_STARTED`` (added): the round ended (an operator, or the room's automatic new
    round after its graduated market went quiet); the room starts again at the initial curve
    with fresh balances. Followed by a fresh ``ENVIRONMENT_STATE`` to each member."""

    environmentId: str
    sequence: int
    round: int
    timestamp: Millis


class Participants(_Out):
    """``PARTICIPANTS`` (added): the environment's participant count changed (at most one per
    second per environment)."""

    environmentId: str
    participants: int


class QuoteFees(_Out):
    protocol: U64
    creator: U64
    lp: U64


class LimitRefusal(_Out):
    limit: str
    value: str | int


class TradeQuote(_Out):
    """``TRADE_QUOTE`` (added): what the quoted trade would do now, computed by the code that
    executes trades."""

    environmentId: str
    phase: Phase
    isBuy: bool
    amount: U64
    amountOut: U64 = Field(description="Tokens for a buy, lamports after fees for a sell.")
    solAmount: U64
    tokenAmount: U64
    fees: QuoteFees
    priceBefore: Price
    priceAfter: Price
    averagePrice: Price
    priceImpactBps: int
    unspent: U64 = Field(description="Lamports of a buy's budget it would leave unspent.")
    graduates: bool = Field(
        description="True when the buy would complete the curve (the market then migrates to its "
        "pool; priceAfter is the pool's)."
    )
    refusedBy: LimitRefusal | None = Field(description="The limit that would refuse it, or null.")


class RewardUpdate(_Out):
    """``REWARD_UPDATE``: the wallet's tier, unclaimed rewards (lamports) and totals; the reply
    to ``SUBSCRIBE_REWARDS`` and ``CLAIM_REWARDS``, then on changes (coalesced per 100 ms)."""

    tier: str | None
    unclaimedRewards: U64
    totalLaunches: int
    totalVolume: U64
    replay: bool | None = _absent_when_none(_REPLAY)


class VoiceSessionReady(_Out):
    """``VOICE_SESSION_READY``: the session, and a LiveKit token to send audio through its room.

    The token (a JWT signed with ``LIVEKIT_API_SECRET``) names the wallet as identity and lets
    it join only ``room`` and publish microphone audio, until ``expiresAt``. Audio may also come
    as binary frames on this socket.
    """

    sessionId: str
    liveKitToken: str
    liveKitUrl: str
    room: str
    expiresAt: Millis


class VoiceTranscription(_Out):
    """``VOICE_TRANSCRIPTION``: the words heard so far (``isFinal`` false; at most every 0.3 s of
    audio, when the words changed), then the utterance's final words."""

    text: str
    isFinal: bool
    sessionId: str


# What a recognised command asks for (voice/speech/intents.py recognises them).
Intent = Literal[
    "EXECUTE_TRADE",
    "LAUNCH_TOKEN",
    "MARKET_ANALYSIS",
    "JOIN_ENVIRONMENT",
    "CHAT",
    "GET_REWARDS",
    "CLAIM_REWARDS",
    "UNKNOWN",
]
# The message a client sends to carry out a recognised command once its user confirms it. A launch
# is confirmed over HTTP (``POST /api/environments``); the other intents only ask for figures.
CONFIRMED_BY: dict[Intent, str] = {
    "EXECUTE_TRADE": "VIRTUAL_TRADE",
    "JOIN_ENVIRONMENT": "JOIN_ENVIRONMENT",
    "CHAT": "CHAT_MESSAGE",
    "CLAIM_REWARDS": "CLAIM_REWARDS",
}


class VoiceCommand(_Out):
    """``VOICE_COMMAND``: what the final words ask for. Never executed by the server: the client
    confirms it by sending the matching message."""

    intent: Intent
    parameters: dict[str, str | bool]
    confidence: Annotated[float, Field(ge=0, le=1)]
    sessionId: str


class VoiceResponse(_Out):
    """``VOICE_RESPONSE``: the assistant's one-sentence answer, with live figures, or the
    action restated as a question."""

    text: str
    sessionId: str


class ErrorData(_Out):
    """``ERROR``: the code says what went wrong; nothing was changed."""

    code: ErrorCode
    message: str
    details: dict[str, Any] | None = _absent_when_none(
        "Particulars, e.g. ``field`` (the one at fault), ``errors`` (each invalid field and its "
        "problem) or ``retryAfterMs``."
    )


SERVER_MESSAGES: dict[str, type[_Out]] = {
    "HEARTBEAT": HeartbeatReply,
    "ENVIRONMENT_STATE": EnvironmentState,
    "VIRTUAL_TRADE_EXECUTED": TradeExecuted,
    "CHAT_MESSAGE": ChatMessageView,
    "PRICE_UPDATE": PriceUpdate,
    "MARKET_GRADUATED": MarketGraduated,
    "ROUND_STARTED": RoundStarted,
    "PARTICIPANTS": Participants,
    "TRADE_QUOTE": TradeQuote,
    "REWARD_UPDATE": RewardUpdate,
    "VOICE_SESSION_READY": VoiceSessionReady,
    "VOICE_TRANSCRIPTION": VoiceTranscription,
    "VOICE_COMMAND": VoiceCommand,
    "VOICE_RESPONSE": VoiceResponse,
    "ERROR": ErrorData,
}
