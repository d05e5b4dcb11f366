"""HTTP API of trading: a trade's quote (``GET /api/environments/{id}/quote``)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

import protocol
from trading.services import trade_quote

IS_BUY = {"true": True, "false": False}


class QuoteView(APIView):
    """What a ``VIRTUAL_TRADE`` would do now, without doing it: the ``TRADE_QUOTE`` data of the
    WebSocket's ``QUOTE_TRADE``, computed by the code that executes trades. No sign-in needed."""

    @extend_schema(
        operation_id="environments_quote",
        parameters=[
            OpenApiParameter(
                "amount",
                str,
                required=True,
                description="Lamports to spend on a buy (fees included), raw tokens to sell.",
            ),
            OpenApiParameter("isBuy", str, required=True, enum=["true", "false"]),
        ],
        responses=protocol.TradeQuote,
    )
    def get(self, request: Request, environment_id: str) -> Response:
        is_buy = request.query_params.get("isBuy")
        if is_buy not in IS_BUY:
            raise protocol.invalid("isBuy must be true or false", field="isBuy")
        data = protocol.validate_data(
            "QUOTE_TRADE",
            {
                "environmentId": environment_id,
                "amount": request.query_params.get("amount"),
                "isBuy": IS_BUY[is_buy],
            },
        )
        assert isinstance(data, protocol.QuoteTradeData)
        quote = trade_quote(
            environment_id=data.environmentId, amount=int(data.amount), is_buy=data.isBuy
        )
        return Response(protocol.dump(quote))
