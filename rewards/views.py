"""HTTP: the signed-in wallet's rewards and how they were earned."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

import protocol
from environments.views import IsWallet
from rewards.selectors import reward_history, reward_view
from wallets.services import user_wallet


class MyRewardsView(APIView):
    """The same fields as ``REWARD_UPDATE``, plus the latest ledger entries and claims."""

    permission_classes = [IsWallet]

    @extend_schema(operation_id="rewards_me", responses=protocol.RewardUpdate)
    def get(self, request: Request) -> Response:
        wallet = user_wallet(request.user)
        assert wallet is not None
        return Response({**protocol.dump(reward_view(wallet)), **reward_history(wallet)})
