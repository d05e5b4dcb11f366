"""HTTP API for environments and their trade history."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from pydantic import BaseModel, Field
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

import protocol
from environments.selectors import (
    SORTS,
    environment_get,
    environment_list,
    environment_summaries,
)
from environments.services import environment_create
from idempotency.services import Replay
from kernel.clock import millis
from protocol.errors import DomainError, ErrorCode
from protocol.messages import U64, Price
from trading.selectors import INTERVALS, candles_page, stored_price, trade_view, trades_page
from wallets.services import user_wallet

MAX_PAGE = 200
DEFAULT_PAGE = 50
MAX_CANDLES = 1000
DEFAULT_CANDLES = 200
# 9999-01-01T00:00:00Z: far enough, and a day's interval after it still fits a datetime.
MAX_MILLIS = 253_370_764_800_000


class LaunchRequest(serializers.Serializer[Any]):
    name = serializers.CharField(min_length=1, max_length=64)
    tokenMint = serializers.CharField(required=False, min_length=32, max_length=44)
    requestId = serializers.CharField(
        required=False,
        min_length=1,
        max_length=64,
        trim_whitespace=False,
        help_text="Idempotency key, as the Idempotency-Key header (which takes precedence).",
    )


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description=(
        "1-64 characters. A launch repeated with the same key by the same wallet within "
        "FUNPUMP_IDEMPOTENCY_WINDOW is not run again: the answer is 200 with the environment "
        "it created and the header Idempotent-Replayed: true."
    ),
)


def _launch_key(request: Request, body: dict[str, Any]) -> str | None:
    """The launch's idempotency key: the Idempotency-Key header, else the body's requestId."""
    header = request.headers.get("Idempotency-Key")
    if header is None:
        key: str | None = body.get("requestId")
        return key
    if not 1 <= len(header) <= 64:
        raise DomainError(
            ErrorCode.INVALID_MESSAGE,
            "Idempotency-Key must be 1-64 characters",
            {"field": "Idempotency-Key"},
        )
    if body.get("requestId") not in (None, header):
        raise DomainError(
            ErrorCode.INVALID_MESSAGE,
            "requestId and the Idempotency-Key header differ",
            {"field": "requestId"},
        )
    return header


class PageQuery(serializers.Serializer[Any]):
    before = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_PAGE)
    offset = serializers.IntegerField(required=False, min_value=0, max_value=10**9)


class ListQuery(PageQuery):
    sort = serializers.ChoiceField(
        choices=SORTS,
        required=False,
        error_messages={"invalid_choice": f"sort must be one of {', '.join(SORTS)}"},
        help_text=(
            "newest (default): the most recently created first; marketCap: the largest market "
            "cap first; volume24h: the largest 24 h volume of the current round first (markets "
            "not traded in 24 h after, by last trade); lastTrade: the most recently traded "
            "first, never traded ones last."
        ),
    )


class CandleQuery(serializers.Serializer[Any]):
    interval = serializers.ChoiceField(
        choices=list(INTERVALS),
        required=False,
        error_messages={"invalid_choice": f"interval must be one of {', '.join(INTERVALS)}"},
        help_text="Candle length, aligned on UTC epoch multiples; 1m when absent.",
    )
    before = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_MILLIS,
        help_text="Milliseconds since the epoch: only candles starting before (exclusive).",
    )
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_CANDLES,
        help_text=f"At most {MAX_CANDLES} intervals; {DEFAULT_CANDLES} when absent.",
    )
    round = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=2**31 - 1,
        help_text="An earlier round of the room (1 is the first); the current one when absent.",
    )


class CandleView(BaseModel):
    """One OHLCV candle: trade prices in SOL per whole token (fees excluded)."""

    time: int = Field(description="The interval's start, milliseconds since the Unix epoch.")
    open: Price
    high: Price
    low: Price
    close: Price
    volume: U64 = Field(description="Lamports traded (solAmount), fees excluded.")
    trades: int


class CandlePage(BaseModel):
    """Candles oldest first; ``next`` continues with the older ones (null: none older)."""

    results: list[CandleView]
    next: str | None


class EnvironmentPage(BaseModel):
    """A page of environments, in the order asked (newest first by default)."""

    results: list[protocol.EnvironmentSummary]
    next: str | None


class TradePage(BaseModel):
    """A page of trades, newest first; ``next`` continues with older ones."""

    results: list[protocol.TradeView]
    next: str | None


class IsWallet(permissions.BasePermission):
    """Signed in with a wallet (token or session)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return user_wallet(request.user) is not None


class EnvironmentListView(APIView):
    """List environments (newest first, or as ``sort`` says) or launch one."""

    def get_permissions(self) -> list[permissions.BasePermission]:
        return [IsWallet()] if self.request.method == "POST" else []

    @extend_schema(
        operation_id="environments_list", parameters=[ListQuery], responses=EnvironmentPage
    )
    def get(self, request: Request) -> Response:
        query = ListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data.get("limit", DEFAULT_PAGE)
        offset = query.validated_data.get("offset", 0)
        sort = query.validated_data.get("sort")
        page = list(environment_list(sort or "newest")[offset : offset + limit + 1])
        next_url = None
        if len(page) > limit:
            page = page[:limit]
            sorted_by = f"&sort={sort}" if sort else ""
            next_url = request.build_absolute_uri(
                f"{request.path}?offset={offset + limit}&limit={limit}{sorted_by}"
            )
        results = [protocol.dump(summary) for summary in environment_summaries(page)]
        return Response({"results": results, "next": next_url})

    @extend_schema(
        operation_id="environments_launch",
        request=LaunchRequest,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: protocol.EnvironmentSummary, 200: protocol.EnvironmentSummary},
    )
    def post(self, request: Request) -> Response:
        body = LaunchRequest(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            environment = environment_create(
                name=body.validated_data["name"],
                token_mint=body.validated_data.get("tokenMint"),
                launched_by=user_wallet(request.user) or "",
                request_id=_launch_key(request, body.validated_data),
            )
        except Replay as replay:
            # Launched before under this key: the environment it created, as it is now.
            original = environment_get(replay.answer["id"])
            if original is None:  # deleted by an operator since
                raise DomainError(
                    ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found"
                ) from None
            (summary,) = environment_summaries([original])
            return Response(protocol.dump(summary), headers={"Idempotent-Replayed": "true"})
        (summary,) = environment_summaries([environment])
        return Response(protocol.dump(summary), status=status.HTTP_201_CREATED)


class EnvironmentDetailView(APIView):
    @extend_schema(operation_id="environments_retrieve", responses=protocol.EnvironmentSummary)
    def get(self, request: Request, environment_id: str) -> Response:
        environment = environment_get(environment_id)
        if environment is None:
            raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found")
        (summary,) = environment_summaries([environment])
        return Response(protocol.dump(summary))


class TradeListView(APIView):
    """Trade history, newest first; ``before`` pages back by sequence."""

    @extend_schema(
        operation_id="environments_trades",
        parameters=[
            OpenApiParameter("before", int, description="Only trades with a lower sequence."),
            OpenApiParameter("limit", int, description=f"At most {MAX_PAGE}."),
        ],
        responses=TradePage,
    )
    def get(self, request: Request, environment_id: str) -> Response:
        if environment_get(environment_id) is None:
            raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found")
        query = PageQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data.get("limit", DEFAULT_PAGE)
        trades = list(
            trades_page(environment_id, before=query.validated_data.get("before"), limit=limit)
        )
        next_url = None
        if len(trades) == limit and trades[-1].sequence > 1:
            next_url = request.build_absolute_uri(
                f"{request.path}?before={trades[-1].sequence}&limit={limit}"
            )
        results = [protocol.dump(trade_view(trade)) for trade in trades]
        return Response({"results": results, "next": next_url})


class CandleListView(APIView):
    """OHLCV candles of a round (the current one by default), oldest first within a page;
    ``next`` pages back to older candles."""

    @extend_schema(
        operation_id="environments_candles", parameters=[CandleQuery], responses=CandlePage
    )
    def get(self, request: Request, environment_id: str) -> Response:
        environment = environment_get(environment_id)
        if environment is None:
            raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found")
        query = CandleQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        interval = query.validated_data.get("interval", "1m")
        limit = query.validated_data.get("limit", DEFAULT_CANDLES)
        round_ = query.validated_data.get("round")
        if round_ is not None and round_ > environment.round:
            raise DomainError(
                ErrorCode.INVALID_MESSAGE,
                f"round must be between 1 and {environment.round}, the current round",
                {"field": "round", "round": environment.round},
            )
        page = candles_page(
            environment.id,
            round_=environment.round if round_ is None else round_,
            seconds=INTERVALS[interval],
            before=query.validated_data.get("before"),
            limit=limit,
        )
        next_url = None
        if page.older is not None:
            rounded = "" if round_ is None else f"&round={round_}"
            next_url = request.build_absolute_uri(
                f"{request.path}?interval={interval}&before={millis(page.older)}"
                f"&limit={limit}{rounded}"
            )
        results = [
            {
                "time": millis(candle.start),
                "open": stored_price(candle.open),
                "high": stored_price(candle.high),
                "low": stored_price(candle.low),
                "close": stored_price(candle.close),
                "volume": str(candle.volume),
                "trades": candle.trades,
            }
            for candle in page.candles
        ]
        return Response({"results": results, "next": next_url})
