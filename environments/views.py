"""HTTP API for environments and their trade history."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from pydantic import BaseModel
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

import protocol
from environments.selectors import environment_get, environment_list, environment_summaries
from environments.services import environment_create
from idempotency.services import Replay
from protocol.errors import DomainError, ErrorCode
from trading.selectors import trade_view, trades_page
from wallets.services import user_wallet

MAX_PAGE = 200
DEFAULT_PAGE = 50


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


class EnvironmentPage(BaseModel):
    """A page of environments, newest first."""

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
    """List environments (newest first) or launch one."""

    def get_permissions(self) -> list[permissions.BasePermission]:
        return [IsWallet()] if self.request.method == "POST" else []

    @extend_schema(
        operation_id="environments_list", parameters=[PageQuery], responses=EnvironmentPage
    )
    def get(self, request: Request) -> Response:
        query = PageQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data.get("limit", DEFAULT_PAGE)
        offset = query.validated_data.get("offset", 0)
        page = list(environment_list()[offset : offset + limit + 1])
        next_url = None
        if len(page) > limit:
            page = page[:limit]
            next_url = request.build_absolute_uri(
                f"{request.path}?offset={offset + limit}&limit={limit}"
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
