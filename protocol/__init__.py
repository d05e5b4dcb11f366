"""Every WebSocket message of the FunPump contract, declared once.

Client messages are validated here; server messages are built from these models, so that the
published JSON Schema (``/api/protocol.json``), the docs and the code cannot drift apart.

Big integers (lamports, raw token units) travel as decimal strings of digits within u64.
Timestamps are integer milliseconds since the Unix epoch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic.json_schema import models_json_schema

from protocol.addresses import is_public_key
from protocol.errors import DomainError, ErrorCode

U64_MAX = 2**64 - 1
MAX_BATCH = 50
MAX_CHAT_CHARS = 500


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
    Field(description="Unsigned 64-bit integer as a decimal string (lamports or raw units)."),
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
    model_config = ConfigDict(extra="forbid")


# --- Client → server --------------------------------------------------------------------------


class HeartbeatData(_Data):
    """``HEARTBEAT``: keeps the connection alive; the server answers with its clock."""


class JoinEnvironmentData(_Data):
    """``JOIN_ENVIRONMENT``: enter an environment; answered by ``ENVIRONMENT_STATE``."""

    environmentId: EnvironmentId
    userId: Wallet


class VirtualTradeData(_Data):
    """``VIRTUAL_TRADE``: buy with a lamport budget (fees included) or sell raw token units."""

    environmentId: EnvironmentId
    amount: U64
    isBuy: bool
    minAmountOut: U64 | None = Field(
        default=None,
        description="Slippage guard: least tokens for a buy, least lamports after fees for a sell.",
    )


class ChatMessageData(_Data):
    """``CHAT_MESSAGE``: say something in a joined environment (1-500 characters, trimmed)."""

    environmentId: EnvironmentId
    message: Annotated[str, AfterValidator(_chat_text)]


class SubscribePriceData(_Data):
    """``SUBSCRIBE_PRICE``: a snapshot ``PRICE_UPDATE`` now, then coalesced updates.

    With ``environmentId`` the price is that environment's curve (``mintAddress`` must be its
    ``tokenMint``); without it, the most recently created open environment carrying the mint.
    """

    mintAddress: Wallet
    environmentId: EnvironmentId | None = None


class UnsubscribePriceData(SubscribePriceData):
    """``UNSUBSCRIBE_PRICE``: stop the updates of a subscription (no reply)."""


class SubscribeRewardsData(_Data):
    """``SUBSCRIBE_REWARDS``: the wallet's ``REWARD_UPDATE`` now and whenever it changes."""

    userId: Wallet


class ClaimRewardsData(_Data):
    """``CLAIM_REWARDS``: move the unclaimed rewards into a payout record."""

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
    """``HEARTBEAT`` reply."""

    timestamp: Millis


class Fees(_Out):
    protocolBps: int
    creatorBps: int


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
    fee: U64 = Field(description="Protocol plus creator fee, lamports.")


class TradeExecuted(_Out):
    """``VIRTUAL_TRADE_EXECUTED``: to the whole environment; the trader's copy adds ``balance``."""

    trade: TradeView
    newReserves: Reserves
    environmentId: str
    sequence: int
    balance: Balance | None = None
    replay: bool | None = Field(
        default=None,
        description="Added: true on the answer to a repeated requestId (not run again).",
    )


class ChatMessageView(_Out):
    """``CHAT_MESSAGE`` broadcast, also the shape of ``chatHistory`` items."""

    userId: str
    message: str
    timestamp: Millis
    id: str
    environmentId: str
    sequence: int
    replay: bool | None = Field(
        default=None,
        description="Added: true on the answer to a repeated requestId (not run again).",
    )


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


class EnvironmentState(EnvironmentSummary):
    """``ENVIRONMENT_STATE``: the reply to ``JOIN_ENVIRONMENT``."""

    chatHistory: list[ChatMessageView]
    trades: list[TradeView]
    balance: Balance
    marketPrice: Price | None = Field(
        default=None, description="The mint's market price from the feed; null when unknown."
    )


class PriceUpdate(_Out):
    """``PRICE_UPDATE``: spot price, 24 h volume (lamports, fees excluded) and market cap."""

    mintAddress: str
    price: Price
    volume: U64
    timestamp: Millis
    environmentId: str | None = Field(
        default=None, description="The environment priced; absent for a market-feed price."
    )
    marketCap: U64


class RewardUpdate(_Out):
    """``REWARD_UPDATE``: the wallet's tier, unclaimed rewards (lamports) and totals."""

    tier: str | None
    unclaimedRewards: U64
    totalLaunches: int
    totalVolume: U64
    replay: bool | None = Field(
        default=None,
        description="Added: true on the answer to a repeated requestId (not run again).",
    )


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
    """``VOICE_TRANSCRIPTION``: the words heard so far (``isFinal`` false), then the utterance's
    final words."""

    text: str
    isFinal: bool
    sessionId: str


# What a recognised command asks for (voice/intents.py recognises them).
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


class VoiceCommand(_Out):
    """``VOICE_COMMAND``: what the final words ask for. Never executed by the server: the client
    confirms it by sending the matching message."""

    intent: Intent
    parameters: dict[str, str | bool]
    confidence: Annotated[float, Field(ge=0, le=1)]
    sessionId: str


class VoiceResponse(_Out):
    """``VOICE_RESPONSE``: the assistant's one-sentence answer, with live figures."""

    text: str
    sessionId: str


class ErrorData(_Out):
    """``ERROR``: the code says what went wrong; nothing was changed."""

    code: ErrorCode
    message: str
    details: dict[str, Any] | None = None


SERVER_MESSAGES: dict[str, type[_Out]] = {
    "HEARTBEAT": HeartbeatReply,
    "ENVIRONMENT_STATE": EnvironmentState,
    "VIRTUAL_TRADE_EXECUTED": TradeExecuted,
    "CHAT_MESSAGE": ChatMessageView,
    "PRICE_UPDATE": PriceUpdate,
    "REWARD_UPDATE": RewardUpdate,
    "VOICE_SESSION_READY": VoiceSessionReady,
    "VOICE_TRANSCRIPTION": VoiceTranscription,
    "VOICE_COMMAND": VoiceCommand,
    "VOICE_RESPONSE": VoiceResponse,
    "ERROR": ErrorData,
}


# --- Encoding and decoding ------------------------------------------------------------------

_REQUEST_ID = TypeAdapter(
    Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_printable)]
)


@dataclass(frozen=True, slots=True)
class Request:
    """One client message after the envelope is read; ``data`` not yet validated."""

    type: str
    data: Any
    request_id: str | None


def invalid(message: str, **details: Any) -> DomainError:
    return DomainError(ErrorCode.INVALID_MESSAGE, message, details or None)


def decode_envelope(text: str) -> Request:
    """Parse a text frame into its type, data and request id; raise INVALID_MESSAGE if malformed."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(
            "malformed JSON", problem=exc.msg, line=exc.lineno, column=exc.colno
        ) from None
    except RecursionError:
        raise invalid("malformed JSON", problem="nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        raise invalid("malformed JSON", problem=str(exc)[:200]) from None
    if not isinstance(raw, dict):
        raise invalid(
            "a message must be a JSON object",
            problem="expected an object",
            received=_json_kind(raw),
        )
    request_id = raw.get("requestId")
    if request_id is not None:
        try:
            request_id = _REQUEST_ID.validate_python(request_id, strict=True)
        except ValidationError:
            raise invalid(
                "requestId must be 1-64 printable characters", field="requestId"
            ) from None
    if _MAYBE_SURROGATE.search(text):
        bad = _lone_surrogate_at(raw)
        if bad is not None:
            raise invalid(
                "text must be valid UTF-8",
                field=bad,
                problem="contains a lone surrogate, which is not valid UTF-8",
            ).with_request_id(request_id)
    message_type = raw.get("type")
    if not isinstance(message_type, str):
        raise DomainError(
            ErrorCode.INVALID_MESSAGE, "missing message type", {"field": "type"}
        ).with_request_id(request_id)
    if message_type not in CLIENT_MESSAGES:
        raise DomainError(
            ErrorCode.INVALID_MESSAGE,
            "unknown message type",
            {"field": "type", "type": message_type[:64]},
        ).with_request_id(request_id)
    return Request(type=message_type, data=raw.get("data"), request_id=request_id)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _lone_surrogate_at(message: dict[str, Any]) -> str | None:
    """The path (``data.message``, ``data.0.environmentId``) of the first string, or the object
    holding the first key, that has a lone surrogate; None when there is none.

    Iterative: the frame may nest as deep as the JSON parser allowed.
    """
    pending: list[tuple[str, Any]] = [("", message)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path or "message"
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    return path or "message"
                pending.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            pending.extend((f"{path}.{index}", item) for index, item in enumerate(value))
    return None


def validate_data(message_type: str, data: Any) -> _Data:
    """Validate one payload of ``message_type``; raise INVALID_MESSAGE naming the problem."""
    model = CLIENT_MESSAGES[message_type]
    if data is None and message_type in DATA_OPTIONAL:
        data = {}
    if not isinstance(data, dict):
        raise invalid("data must be an object", field="data")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid("invalid data", errors=_describe(exc)) from None


def _describe(exc: ValidationError) -> list[dict[str, str]]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:10]:
        field = ".".join(str(part) for part in error["loc"]) or "data"
        message = error["msg"].removeprefix("Value error, ")
        problems.append({"field": field, "problem": message})
    return problems


def encode(message_type: str, data: Any, request_id: str | None = None) -> str:
    """Serialise one server message; ``data`` is a model or plain JSON-ready value."""
    payload = (
        data.model_dump(mode="json", exclude_none=True) if isinstance(data, BaseModel) else data
    )
    frame: dict[str, Any] = {"type": message_type, "data": payload}
    if request_id is not None:
        frame["requestId"] = request_id
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def error_frame(error: DomainError, request_id: str | None = None) -> str:
    data = ErrorData(code=error.code, message=error.message, details=error.details)
    return encode("ERROR", data, request_id)


def json_schema() -> dict[str, Any]:
    """JSON Schema of every message, both directions, generated from the declarations above."""
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = []
    models += [(model, "validation") for model in CLIENT_MESSAGES.values()]
    models += [(reply, "serialization") for reply in SERVER_MESSAGES.values()]
    keys, schema = models_json_schema(models, ref_template="#/$defs/{model}")
    schema["title"] = "FunPump WebSocket protocol"
    schema["description"] = (
        "Every frame is {type, data, requestId?}. clientMessages and serverMessages map each "
        "message type to the schema of its data; a client message's data may also be an array "
        f"of 1-{MAX_BATCH} such objects (a batch)."
    )
    schema["clientMessages"] = {
        name: keys[(model, "validation")] for name, model in CLIENT_MESSAGES.items()
    }
    schema["serverMessages"] = {
        name: keys[(model, "serialization")] for name, model in SERVER_MESSAGES.items()
    }
    return schema


def dump(data: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """A frame's data as plain JSON-ready values (what receipts store), model or dict."""
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json", exclude_none=True)
    return data
