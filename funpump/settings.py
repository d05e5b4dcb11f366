"""FunPump settings: everything comes from the environment (django-environ).

Safe local defaults (SQLite, in-memory channel layer and cache) make a first run need nothing;
``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and Redis, the production path.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

# Lets admin and DRF classes be subscripted for the type checker (ModelAdmin[Environment]).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
_DEV_SECRET = "funpump-insecure-development-key-change-me-0123456789"  # noqa: S105
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=_DEV_SECRET if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "wallets",
    "environments",
    "trading",
    "voice",
    "rewards",
    "idempotency",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out admin login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "funpump.urls"
ASGI_APPLICATION = "funpump.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI every unit of work runs in a worker thread: persistent connections would leak
    # one per thread, and CONN_MAX_AGE=0 without a pool reconnects per query batch. Django's
    # psycopg pool hands connections back at the end of each unit of work.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Bounded waits: a trade queued behind a stuck row lock fails cleanly instead of hanging.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        f"-c lock_timeout={env.int('FUNPUMP_LOCK_TIMEOUT_MS', default=5000)}"
        f" -c statement_timeout={env.int('FUNPUMP_STATEMENT_TIMEOUT_MS', default=15000)}"
    )
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": env.int("FUNPUMP_DB_POOL_MIN", default=2),
        "max_size": env.int("FUNPUMP_DB_POOL_MAX", default=16),
        "timeout": 5,
    }
    # The pool tests a connection before handing it out, so one that died with the server (a
    # restart, a failover) is replaced instead of failing the next trade; its test sends a
    # query only to a connection with something to read (kernel/pgpool.py).
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    # SQLite for a handful of simultaneous users: WAL lets readers run beside the one writer;
    # BEGIN IMMEDIATE takes the write lock when a transaction starts, so a sign-in or a trade
    # waits its turn (up to the busy timeout, seconds) instead of failing with "database is
    # locked" when a read lock cannot be upgraded.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": env.int("FUNPUMP_SQLITE_TIMEOUT", default=20),
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL",
        }
    )
    # A file, not memory, so that the end-to-end tests' server processes share the test data.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer, cache, presence ---------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis on a blocking pool (kernel/redis.py), its connections named by process.
            "BACKEND": "kernel.redis.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults to a 5 s socket timeout, the same as the layer's blocking
                # receive: give the receive loop room. The pool is bounded: the hub's receive
                # holds one connection, its publisher and group changes share the rest, and a
                # call that finds them all busy waits up to `timeout` seconds for one.
                # Its default retries (10, with backoff) hold each call about 2 s while Redis is
                # down: retry once at once (a pooled connection left stale by a restart) and let
                # the hub fall back to the database instead (kernel/realtime/hub.py).
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 30,
                        "socket_connect_timeout": 1,
                        "retry": AsyncRetry(NoBackoff(), 1),
                        "max_connections": 8,
                        "timeout": 2,
                    }
                ],
                "prefix": env.str("FUNPUMP_REDIS_PREFIX", default="funpump"),
                "capacity": 1000,
                "expiry": 60,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("FUNPUMP_REDIS_PREFIX", default="funpump"),
            # The sign-in throttle's counts: on the process's bounded pool, with its short
            # timeouts (kernel/redis.py), not a pool per async context.
            "OPTIONS": {"pool_class": "kernel.redis.SharedCachePool"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
FUNPUMP_REDIS_PREFIX = env.str("FUNPUMP_REDIS_PREFIX", default="funpump")

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# The admin's password login is django-axes' to watch: FUNPUMP_ADMIN_LOGIN_FAILURES wrong
# passwords for one username from one address lock that pair out for FUNPUMP_ADMIN_LOCKOUT
# seconds (each try while locked starts the wait again). Wallet sign-in uses no password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("FUNPUMP_ADMIN_LOGIN_FAILURES", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("FUNPUMP_ADMIN_LOCKOUT", default=900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "wallets.views.client_ip"
AXES_RESET_ON_SUCCESS = True
# Every wallet sign-in is a Django login too: a row per sign-in would grow without end.
AXES_DISABLE_ACCESS_LOG = True
FUNPUMP_CHALLENGE_TTL = 300  # seconds a sign-in nonce stays valid (contract: 5 minutes)
FUNPUMP_TOKEN_TTL = env.int("FUNPUMP_TOKEN_TTL", default=24 * 3600)

# --- Protocol limits ------------------------------------------------------------------------
FUNPUMP_RATE_LIMIT = env.str("FUNPUMP_RATE_LIMIT", default="100/60")
FUNPUMP_AUTH_RATE_LIMIT = env.str("FUNPUMP_AUTH_RATE_LIMIT", default="600/60")
FUNPUMP_IDLE_TIMEOUT = env.int("FUNPUMP_IDLE_TIMEOUT", default=90)
# Graceful shutdown (SIGTERM): seconds to finish the messages in flight and close every socket
# with 1012 before the process exits.
FUNPUMP_DRAIN_SECONDS = env.float("FUNPUMP_DRAIN_SECONDS", default=10.0)
FUNPUMP_MAX_MESSAGE_BYTES = env.int("FUNPUMP_MAX_MESSAGE_BYTES", default=64 * 1024)
FUNPUMP_MAX_JOINED_ENVIRONMENTS = env.int("FUNPUMP_MAX_JOINED_ENVIRONMENTS", default=20)
# Seconds between the PARTICIPANTS roll calls of each server process (0: no PARTICIPANTS frames).
FUNPUMP_PARTICIPANTS_EVERY = env.float("FUNPUMP_PARTICIPANTS_EVERY", default=1.0)
# Seconds a process reuses a room's chat and trade history for the joins at one sequence (0:
# every join reads it): an operator's hide or show in another process is at most this stale in
# a new member's ENVIRONMENT_STATE. Its 24 h figures are reused for at most 5 s (or this).
FUNPUMP_STATE_CACHE_SECONDS = env.float("FUNPUMP_STATE_CACHE_SECONDS", default=1.0)
FUNPUMP_MAX_SUBSCRIPTIONS = env.int("FUNPUMP_MAX_SUBSCRIPTIONS", default=20)
# Seconds a mutating request's requestId stays taken: a repeat within it is answered, not run.
FUNPUMP_IDEMPOTENCY_WINDOW = env.int("FUNPUMP_IDEMPOTENCY_WINDOW", default=24 * 3600)
# Market prices of real mints (run_market_feed); unset: prices come from environments only.
FUNPUMP_MARKET_FEED_URL = env.str("FUNPUMP_MARKET_FEED_URL", default="")
FUNPUMP_MARKET_FEED_API_KEY = env.str("FUNPUMP_MARKET_FEED_API_KEY", default="")
# Bytes waiting in server memory for a client that does not read, beyond the kernel's buffer.
FUNPUMP_MAX_BUFFERED_BYTES = env.int("FUNPUMP_MAX_BUFFERED_BYTES", default=1024 * 1024)
# Resource caps (kernel/caps.py): sockets per wallet and per client address, across processes
# where Redis is set (0: no cap); inbound bytes per connection, as a rate with a burst, and the
# frames and bytes that may wait for the application before the socket is no longer read.
FUNPUMP_MAX_CONNECTIONS_PER_WALLET = env.int("FUNPUMP_MAX_CONNECTIONS_PER_WALLET", default=20)
FUNPUMP_MAX_CONNECTIONS_PER_IP = env.int("FUNPUMP_MAX_CONNECTIONS_PER_IP", default=100)
FUNPUMP_INBOUND_BYTES_PER_SECOND = env.int("FUNPUMP_INBOUND_BYTES_PER_SECOND", default=256 * 1024)
FUNPUMP_INBOUND_BURST_BYTES = env.int("FUNPUMP_INBOUND_BURST_BYTES", default=1024 * 1024)
FUNPUMP_INBOUND_QUEUE_FRAMES = env.int("FUNPUMP_INBOUND_QUEUE_FRAMES", default=64)
FUNPUMP_INBOUND_QUEUE_BYTES = env.int("FUNPUMP_INBOUND_QUEUE_BYTES", default=1024 * 1024)
# /metrics is public in debug mode only; in production it needs this bearer token.
FUNPUMP_METRICS_TOKEN = env.str("FUNPUMP_METRICS_TOKEN", default="")

# --- LiveKit (voice) ------------------------------------------------------------------------
LIVEKIT_URL = env.str("LIVEKIT_URL", default="ws://127.0.0.1:7880")
LIVEKIT_API_KEY = env.str("LIVEKIT_API_KEY", default="devkey")
# Debug mode signs tokens with a development secret; production needs the real one for voice.
LIVEKIT_API_SECRET = env.str(
    "LIVEKIT_API_SECRET", default="funpump-development-livekit-secret" if DEBUG else ""
)
FUNPUMP_VOICE_SESSION_TTL = env.int("FUNPUMP_VOICE_SESSION_TTL", default=600)  # seconds
FUNPUMP_VOICE_COMMAND_LIMITS = env.list(
    "FUNPUMP_VOICE_COMMAND_LIMITS", default=["20/60", "1000/86400"]
)  # recognised commands per wallet: 20 a minute, 1,000 a day
# Audio a session may send, in seconds of speech per second (with a burst of BURST seconds):
# more than real time is fine (a recorded clip), a flood that only burns CPU is not.
FUNPUMP_VOICE_AUDIO_RATE = env.float("FUNPUMP_VOICE_AUDIO_RATE", default=2.0)
FUNPUMP_VOICE_AUDIO_BURST = env.float("FUNPUMP_VOICE_AUDIO_BURST", default=30.0)
# `python -m funpump.serve` makes the speech recogniser ready at startup, in the background
# (about 330 MB per process); off, the first voice session starts it (voice/readiness.py).
FUNPUMP_VOICE_PRELOAD = env.bool("FUNPUMP_VOICE_PRELOAD", default=True)
# Where speech is recognised: "inline" in each web process, or "worker": web processes forward
# audio over the channel layer to `python manage.py runworker voice-speech` (voice/worker.py),
# and never load the speech models themselves. Workers need Redis to be reached.
FUNPUMP_SPEECH = env.str("FUNPUMP_SPEECH", default="inline")
if FUNPUMP_SPEECH not in ("inline", "worker"):
    raise ImproperlyConfigured("FUNPUMP_SPEECH is inline or worker")
if FUNPUMP_SPEECH == "worker" and not REDIS_URL:
    raise ImproperlyConfigured("FUNPUMP_SPEECH=worker needs REDIS_URL: workers are other processes")

# --- REST API -------------------------------------------------------------------------------
# How many reverse proxies stand in front: 0 trusts no X-Forwarded-For / -Proto from clients.
NUM_PROXIES = env.int("DJANGO_NUM_PROXIES", default=0)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "wallets.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "kernel.api.api_exception_handler",
    "NUM_PROXIES": NUM_PROXIES,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "FunPump API",
    "DESCRIPTION": "Virtual token launches: wallet sign-in, environments, trade history.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "OAS_VERSION": "3.1.0",  # pydantic models describe optional fields the 3.1 way
    # The health endpoints are plain async views (no DRF): the hook describes them.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "gateway.views.health_schema",
    ],
}

# --- Static files, i18n ---------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Security (production when DEBUG is off) ------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Every page may load scripts, styles and workers from this origin only, and talk only to it
# ('self' covers ws:// and wss:// of the same host); no inline code, no plugins, no framing.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# HSTS rides on HTTPS responses only (SecurityMiddleware), so plain-HTTP development is unaffected.
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=False)
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
    if NUM_PROXIES:
        # Only a proxy we stand behind may tell us the original request was HTTPS.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Structured (JSON) logs in production: connects, disconnects, messages and errors carry the
# wallet, environment, request id and latency as fields. Plain lines while developing.
LOG_FORMAT = env.str("DJANGO_LOG_FORMAT", default="plain" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
