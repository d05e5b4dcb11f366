from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from environments.views import (
    CandleListView,
    EnvironmentDetailView,
    EnvironmentListView,
    TradeListView,
)
from gateway import views
from kernel.metrics import metrics_view
from rewards.views import MyRewardsView
from trading.views import QuoteView
from wallets.views import ChallengeView, VerifyView

urlpatterns = [
    path("", views.room, name="room"),
    path("admin/", admin.site.urls),
    path("api/auth/challenge", ChallengeView.as_view(), name="auth-challenge"),
    path("api/auth/verify", VerifyView.as_view(), name="auth-verify"),
    path("api/environments", EnvironmentListView.as_view(), name="environment-list"),
    path(
        "api/environments/<str:environment_id>",
        EnvironmentDetailView.as_view(),
        name="environment-detail",
    ),
    path(
        "api/environments/<str:environment_id>/trades",
        TradeListView.as_view(),
        name="environment-trades",
    ),
    path(
        "api/environments/<str:environment_id>/candles",
        CandleListView.as_view(),
        name="environment-candles",
    ),
    path("api/environments/<str:environment_id>/quote", QuoteView.as_view(), name="quote"),
    path("api/rewards/me", MyRewardsView.as_view(), name="rewards-me"),
    path("api/health", views.HealthView.as_view(), name="health"),
    path("api/health/ready", views.ReadinessView.as_view(), name="health-ready"),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/protocol.json", views.protocol_schema, name="protocol-schema"),
    path("api/asyncapi.json", views.asyncapi, name="asyncapi"),
    path("metrics", metrics_view, name="metrics"),
]
