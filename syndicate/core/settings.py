"""Configuration: one frozen ``Settings``, built once from flags and ``SYNDICATE_*``.

Precedence: command-line flag, then environment variable, then the default.
Nothing else in the service reads the environment.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from syndicate.core.errors import SyndicateError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_DATABASE = "sqlite:///data/syndicate.db"
DEFAULT_MAX_BODY_SIZE = 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
DEFAULT_DB_POOL_MIN = 1
DEFAULT_DB_POOL_MAX = 10
DEFAULT_FEED_ITEMS = 50
MAX_FEED_ITEMS = 500
DEFAULT_FEED_MAX_AGE = 300
DEFAULT_FEED_PAGE_MAX_AGE = 86400
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DEFAULT_DELIVERY_CONNECT_TIMEOUT = 5.0
DEFAULT_DELIVERY_TIMEOUT = 15.0
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_MAX_PER_HOST = 8
DEFAULT_MAX_PER_OWNER = 32
#: Shares of ``max_in_flight`` always left to each kind of subscription, whatever the
#: other kind's backlog: WebSub may use at most 1 - webhook_share, webhooks 1 - websub_share.
DEFAULT_WEBHOOK_SHARE = 0.5
DEFAULT_WEBSUB_SHARE = 0.25
DEFAULT_HEARTBEAT_INTERVAL = 2.0
DEFAULT_WORKER_STALE_AFTER = 8.0
DEFAULT_DISABLE_AFTER = 5 * 86400.0
DEFAULT_SECRET_GRACE = 86400.0
DEFAULT_EVENT_RETENTION = 30 * 86400.0
DEFAULT_WEBSUB_LEASE = 10 * 86400
MIN_WEBSUB_LEASE = 3600
MAX_WEBSUB_LEASE = 30 * 86400
DEFAULT_WEBSUB_MAX_PER_HOST = 1000
DEFAULT_WEBSUB_MAX_PER_TOPIC = 10000
DEFAULT_HUB_MAX_PENDING = 1000
DEFAULT_HUB_MAX_PENDING_PER_CLIENT = 50
DEFAULT_HUB_MAX_PENDING_PER_DOMAIN = 50
DEFAULT_HUB_SUBSCRIBE_RATE = 20.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_WRITE_RATE = 10.0
DEFAULT_WRITE_BURST = 100
DEFAULT_MAX_SUBSCRIPTIONS = 100
#: DESIGN.md allows 1-20 topics per article; the setting can lower the cap.
MAX_TOPICS_PER_ARTICLE = 20
DEFAULT_MAX_HEADER_SIZE = 8190
DEFAULT_STREAM_MAX_PER_TOKEN = 5
DEFAULT_STREAM_MAX = 1000
DEFAULT_STREAM_HEARTBEAT = 15.0
DEFAULT_STREAM_WRITE_TIMEOUT = 10.0
DEFAULT_STREAM_MAX_BUFFER = 1024 * 1024
DEFAULT_LOG_LEVEL = "info"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
LOG_LEVELS = ("debug", "info", "warning", "error")
EVENT_LOOPS = ("uvloop", "asyncio")


class SettingsError(SyndicateError, ValueError):
    """A configuration value is unusable; the message names the variable or flag."""


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with.

    host, port: where ``serve`` listens.
    database: ``sqlite:///path`` (default ``sqlite:///data/syndicate.db``) or ``postgresql://...``.
    base_url: the public origin used in absolute URLs, GUIDs and feed links;
        defaults to ``http://host:port``.
    max_body_size: largest accepted request body in bytes (413 beyond).
    max_batch_size: most articles in one ``POST /api/articles/batch``.
    db_pool_min, db_pool_max: PostgreSQL connection pool sizes.
    feed_items: entries per feed page (default 50).
    feed_max_age: ``Cache-Control: max-age`` of a feed's first page, seconds (default 300).
    feed_page_max_age: the same for older pages (``?before=``), which rarely change.
    retry_schedule: delays before each retry, seconds (default 5s, 5m, 30m, 2h, 5h, 10h, 10h).
    delivery_connect_timeout, delivery_timeout: per attempt, seconds (defaults 5 and 15).
    max_in_flight, max_per_host: concurrent delivery requests overall and per host.
    max_per_owner: concurrent delivery requests (queued or sent) per owner: a partner
        token for webhooks, the callback host for WebSub (default 32).
    webhook_share, websub_share: fractions of ``max_in_flight`` always kept for each
        kind of subscription (defaults 0.5 and 0.25; their sum at most 1).
    heartbeat_interval: how often a process records that it is alive, seconds (default 2).
    worker_stale_after: a process silent this long is taken as dead and its claimed
        deliveries are released by any live process, seconds (default 8).
    disable_after: a webhook subscription failing this long without a success is
        disabled, seconds (default 5 days).
    secret_grace: how long a rotated-out secret keeps signing, seconds (default 24 h).
    event_retention: how long the change log (``GET /api/events``, the stream) keeps an
        event, and delivery attempts are kept, seconds (default 30 days); older ones
        are pruned in the background (an event still being delivered is kept).
    allow_private_targets: let subscriptions reach private, loopback and other
        non-public addresses (local development and tests only).
    fast_paths: the speed-ups that lean on other projects' internals (the feed
        route's own matcher on aiohttp's private ``Resource._match``, SQLite's
        ``-shm`` read with ctypes, asyncpg records built without ``__init__``);
        off, each takes its plain path (default on; the tests run both).
    websub_lease_default, websub_lease_min, websub_lease_max: WebSub leases, seconds
        (default 10 days, clamped to [1 hour, 30 days]).
    websub_max_per_host: most WebSub subscriptions for callbacks on one host.
    websub_max_per_topic: most WebSub subscriptions of one topic feed.
    hub_max_pending: WebSub verifications under way at once (beyond: 429).
    hub_max_pending_per_client: the same per client address (an IPv6 /64 counts as one).
    hub_max_pending_per_domain: the same per callback registrable domain.
    hub_subscribe_rate: new WebSub subscription requests accepted per second in all.
    header_timeout: seconds a client has to send its request line and headers.
    keepalive_timeout: seconds an idle keep-alive connection stays open.
    body_timeout: seconds a client has to send a request body once its headers are in.
    workers: ``serve`` processes sharing the listening port (SO_REUSEPORT).
    write_rate, write_burst: partners' writes (per token and per client IP),
        failed authentications and ``POST /hub`` (per client IP) refill at
        ``write_rate`` per second up to ``write_burst``; beyond: 429 + ``Retry-After``.
    max_subscriptions: webhook subscriptions one partner may hold.
    max_topics: topics one article may have (1-20).
    max_header_size: longest request line / header field in bytes.
    stream_max_per_token, stream_max: open event streams (``GET /api/events/stream``)
        per token and in all, per process (defaults 5 and 1,000; beyond: 429).
    stream_heartbeat: seconds of silence after which a stream sends a comment (default 15).
    stream_write_timeout, stream_max_buffer: a stream whose client has not taken what was
        sent within this many seconds, or lets more than this many bytes wait, is ended
        with a last message (the client resumes by id; defaults 10 s and 1 MiB).
    log_level: debug, info, warning or error.
    log_format: ``text`` or ``json`` (one object per line).
    event_loop: ``uvloop`` (the default where it is installed) or ``asyncio``.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    database: str = DEFAULT_DATABASE
    base_url: str = ""
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    db_pool_min: int = DEFAULT_DB_POOL_MIN
    db_pool_max: int = DEFAULT_DB_POOL_MAX
    feed_items: int = DEFAULT_FEED_ITEMS
    feed_max_age: int = DEFAULT_FEED_MAX_AGE
    feed_page_max_age: int = DEFAULT_FEED_PAGE_MAX_AGE
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    delivery_connect_timeout: float = DEFAULT_DELIVERY_CONNECT_TIMEOUT
    delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_per_host: int = DEFAULT_MAX_PER_HOST
    max_per_owner: int = DEFAULT_MAX_PER_OWNER
    webhook_share: float = DEFAULT_WEBHOOK_SHARE
    websub_share: float = DEFAULT_WEBSUB_SHARE
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    worker_stale_after: float = DEFAULT_WORKER_STALE_AFTER
    disable_after: float = DEFAULT_DISABLE_AFTER
    secret_grace: float = DEFAULT_SECRET_GRACE
    event_retention: float = DEFAULT_EVENT_RETENTION
    allow_private_targets: bool = False
    fast_paths: bool = True
    websub_lease_default: int = DEFAULT_WEBSUB_LEASE
    websub_lease_min: int = MIN_WEBSUB_LEASE
    websub_lease_max: int = MAX_WEBSUB_LEASE
    websub_max_per_host: int = DEFAULT_WEBSUB_MAX_PER_HOST
    websub_max_per_topic: int = DEFAULT_WEBSUB_MAX_PER_TOPIC
    hub_max_pending: int = DEFAULT_HUB_MAX_PENDING
    hub_max_pending_per_client: int = DEFAULT_HUB_MAX_PENDING_PER_CLIENT
    hub_max_pending_per_domain: int = DEFAULT_HUB_MAX_PENDING_PER_DOMAIN
    hub_subscribe_rate: float = DEFAULT_HUB_SUBSCRIBE_RATE
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    workers: int = 1
    write_rate: float = DEFAULT_WRITE_RATE
    write_burst: int = DEFAULT_WRITE_BURST
    max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    max_topics: int = MAX_TOPICS_PER_ARTICLE
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    stream_max_per_token: int = DEFAULT_STREAM_MAX_PER_TOKEN
    stream_max: int = DEFAULT_STREAM_MAX
    stream_heartbeat: float = DEFAULT_STREAM_HEARTBEAT
    stream_write_timeout: float = DEFAULT_STREAM_WRITE_TIMEOUT
    stream_max_buffer: int = DEFAULT_STREAM_MAX_BUFFER
    log_level: str = DEFAULT_LOG_LEVEL
    log_format: str = "text"
    event_loop: str = dataclasses.field(default_factory=lambda: default_event_loop())

    def __post_init__(self) -> None:
        if not self.base_url:
            host = f"[{self.host}]" if ":" in self.host else self.host
            shown = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
            object.__setattr__(self, "base_url", f"http://{shown}:{self.port}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not _valid_base_url(self.base_url):
            raise SettingsError(
                f"base URL {self.base_url!r} is not an absolute http(s) URL of an ASCII "
                "host (IDNs as punycode), with an optional port (1-65535) and path, and "
                "no user, query or fragment (SYNDICATE_BASE_URL / --base-url)"
            )
        if not (self.database.startswith(("sqlite:///", "postgresql://", "postgres://"))):
            raise SettingsError(
                f"database {self.database!r} is not sqlite:///path or postgresql://... "
                "(SYNDICATE_DATABASE / --database)"
            )
        if self.feed_items > MAX_FEED_ITEMS:
            raise SettingsError(f"SYNDICATE_FEED_ITEMS must be at most {MAX_FEED_ITEMS}")
        if not self.websub_lease_min <= self.websub_lease_default <= self.websub_lease_max:
            raise SettingsError(
                "WebSub leases: need SYNDICATE_WEBSUB_LEASE_MIN <= _DEFAULT <= _MAX"
            )
        if self.max_topics > MAX_TOPICS_PER_ARTICLE:
            raise SettingsError(f"SYNDICATE_MAX_TOPICS must be at most {MAX_TOPICS_PER_ARTICLE}")
        if not (0 <= self.webhook_share <= 1 and 0 <= self.websub_share <= 1) or (
            self.webhook_share + self.websub_share > 1
        ):
            raise SettingsError(
                "SYNDICATE_WEBHOOK_SHARE and SYNDICATE_WEBSUB_SHARE are fractions "
                "from 0 to 1 whose sum is at most 1"
            )
        if self.worker_stale_after <= self.heartbeat_interval:
            raise SettingsError(
                "SYNDICATE_WORKER_STALE_AFTER must be longer than SYNDICATE_HEARTBEAT_INTERVAL"
            )
        if self.db_pool_min > self.db_pool_max:
            raise SettingsError("SYNDICATE_DB_POOL_MIN is larger than SYNDICATE_DB_POOL_MAX")

    @property
    def public_host(self) -> str:
        return urlsplit(self.base_url).hostname or "localhost"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _port(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise SettingsError(f"{name}={raw!r} is not a port number (0-65535)")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise SettingsError(f"{name}={raw!r} must be at least 1")
    return value


def _seconds(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number of seconds") from None
    if value < 0:
        raise SettingsError(f"{name}={raw!r} must not be negative")
    return value


def parse_duration(text: str) -> float:
    """``"90"`` / ``"1.5"`` are seconds; ``"500ms"``, ``"5s"``, ``"5m"``, ``"2h"``, ``"1d"``."""
    text = text.strip().lower()
    for unit in ("ms", "s", "m", "h", "d"):
        if text.endswith(unit) and text[: -len(unit)].strip():
            number, factor = text[: -len(unit)].strip(), _UNITS[unit]
            break
    else:
        number, factor = text, 1.0
    value = float(number) * factor
    if not value >= 0 or value == float("inf"):
        raise ValueError(text)
    return value


def _duration(name: str, raw: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a duration (seconds, or a number with ms, s, m, h or d)"
        ) from None


def _schedule(name: str, raw: str) -> tuple[float, ...]:
    parts = [p for p in raw.split(",") if p.strip()]
    if not parts:
        raise SettingsError(f"{name}={raw!r} is empty: give delays like 5s,5m,30m")
    try:
        return tuple(parse_duration(p) for p in parts)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a comma-separated list of delays (e.g. 5s,5m,30m,2h or 1,1,1)"
        ) from None


def _positive_float(name: str, raw: str) -> float:
    value = _duration(name, raw)
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be more than zero")
    return value


def _fraction(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number from 0 to 1") from None
    if not 0 <= value <= 1:
        raise SettingsError(f"{name}={raw!r} is not a number from 0 to 1")
    return value


def _flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a yes/no value (1, 0, true, false)")


def _log_format(name: str, raw: str) -> str:
    if raw.lower() not in ("text", "json"):
        raise SettingsError(f"{name}={raw!r} is not text or json")
    return raw.lower()


def _log_level(name: str, raw: str) -> str:
    if raw.lower() not in LOG_LEVELS:
        raise SettingsError(f"{name}={raw!r} is not one of {', '.join(LOG_LEVELS)}")
    return raw.lower()


def default_event_loop() -> str:
    """uvloop where it is installed (it answers a feed revalidation in about a fifth
    less CPU than asyncio's own loop), else asyncio."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def _event_loop(name: str, raw: str) -> str:
    loop = raw.lower()
    if loop not in EVENT_LOOPS:
        raise SettingsError(f"{name}={raw!r} is not one of {', '.join(EVENT_LOOPS)}")
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise SettingsError(f"{name}=uvloop, but uvloop is not installed")
    return loop


def _text(name: str, raw: str) -> str:
    return raw


#: field -> (environment variable, parser)
FIELDS: dict[str, tuple[str, Any]] = {
    "host": ("SYNDICATE_HOST", _text),
    "port": ("SYNDICATE_PORT", _port),
    "database": ("SYNDICATE_DATABASE", _text),
    "base_url": ("SYNDICATE_BASE_URL", _text),
    "max_body_size": ("SYNDICATE_MAX_BODY_SIZE", _positive_int),
    "max_batch_size": ("SYNDICATE_MAX_BATCH_SIZE", _positive_int),
    "db_pool_min": ("SYNDICATE_DB_POOL_MIN", _positive_int),
    "db_pool_max": ("SYNDICATE_DB_POOL_MAX", _positive_int),
    "feed_items": ("SYNDICATE_FEED_ITEMS", _positive_int),
    "feed_max_age": ("SYNDICATE_FEED_MAX_AGE", _seconds),
    "feed_page_max_age": ("SYNDICATE_FEED_PAGE_MAX_AGE", _seconds),
    "retry_schedule": ("SYNDICATE_RETRY_SCHEDULE", _schedule),
    "delivery_connect_timeout": ("SYNDICATE_DELIVERY_CONNECT_TIMEOUT", _positive_float),
    "delivery_timeout": ("SYNDICATE_DELIVERY_TIMEOUT", _positive_float),
    "max_in_flight": ("SYNDICATE_MAX_IN_FLIGHT", _positive_int),
    "max_per_host": ("SYNDICATE_MAX_PER_HOST", _positive_int),
    "max_per_owner": ("SYNDICATE_MAX_PER_OWNER", _positive_int),
    "webhook_share": ("SYNDICATE_WEBHOOK_SHARE", _fraction),
    "websub_share": ("SYNDICATE_WEBSUB_SHARE", _fraction),
    "heartbeat_interval": ("SYNDICATE_HEARTBEAT_INTERVAL", _positive_float),
    "worker_stale_after": ("SYNDICATE_WORKER_STALE_AFTER", _positive_float),
    "disable_after": ("SYNDICATE_DISABLE_AFTER", _positive_float),
    "secret_grace": ("SYNDICATE_SECRET_GRACE", _duration),
    "event_retention": ("SYNDICATE_EVENT_RETENTION", _positive_float),
    "allow_private_targets": ("SYNDICATE_ALLOW_PRIVATE_TARGETS", _flag),
    "fast_paths": ("SYNDICATE_FAST_PATHS", _flag),
    "websub_lease_default": ("SYNDICATE_WEBSUB_LEASE_DEFAULT", _positive_int),
    "websub_lease_min": ("SYNDICATE_WEBSUB_LEASE_MIN", _positive_int),
    "websub_lease_max": ("SYNDICATE_WEBSUB_LEASE_MAX", _positive_int),
    "websub_max_per_host": ("SYNDICATE_WEBSUB_MAX_PER_HOST", _positive_int),
    "websub_max_per_topic": ("SYNDICATE_WEBSUB_MAX_PER_TOPIC", _positive_int),
    "hub_max_pending": ("SYNDICATE_HUB_MAX_PENDING", _positive_int),
    "hub_max_pending_per_client": ("SYNDICATE_HUB_MAX_PENDING_PER_CLIENT", _positive_int),
    "hub_max_pending_per_domain": ("SYNDICATE_HUB_MAX_PENDING_PER_DOMAIN", _positive_int),
    "hub_subscribe_rate": ("SYNDICATE_HUB_SUBSCRIBE_RATE", _positive_float),
    "header_timeout": ("SYNDICATE_HEADER_TIMEOUT", _positive_float),
    "keepalive_timeout": ("SYNDICATE_KEEPALIVE_TIMEOUT", _positive_float),
    "body_timeout": ("SYNDICATE_BODY_TIMEOUT", _positive_float),
    "workers": ("SYNDICATE_WORKERS", _positive_int),
    "write_rate": ("SYNDICATE_WRITE_RATE", _positive_float),
    "write_burst": ("SYNDICATE_WRITE_BURST", _positive_int),
    "max_subscriptions": ("SYNDICATE_MAX_SUBSCRIPTIONS", _positive_int),
    "max_topics": ("SYNDICATE_MAX_TOPICS", _positive_int),
    "max_header_size": ("SYNDICATE_MAX_HEADER_SIZE", _positive_int),
    "stream_max_per_token": ("SYNDICATE_STREAM_MAX_PER_TOKEN", _positive_int),
    "stream_max": ("SYNDICATE_STREAM_MAX", _positive_int),
    "stream_heartbeat": ("SYNDICATE_STREAM_HEARTBEAT", _positive_float),
    "stream_write_timeout": ("SYNDICATE_STREAM_WRITE_TIMEOUT", _positive_float),
    "stream_max_buffer": ("SYNDICATE_STREAM_MAX_BUFFER", _positive_int),
    "log_level": ("SYNDICATE_LOG_LEVEL", _log_level),
    "log_format": ("SYNDICATE_LOG_FORMAT", _log_format),
    "event_loop": ("SYNDICATE_EVENT_LOOP", _event_loop),
}


def load_settings(flags: Mapping[str, str | None], environ: Mapping[str, str]) -> Settings:
    """Settings from raw flag values (``None`` = not given) over ``SYNDICATE_*`` variables."""
    values: dict[str, Any] = {}
    for field, (env_name, parse) in FIELDS.items():
        raw = flags.get(field)
        source = "--" + field.replace("_", "-")
        if raw is None:
            raw = environ.get(env_name)
            source = env_name
        if raw is not None and raw != "":
            values[field] = parse(source, raw)
    return Settings(**values)


#: What a public base URL may be: it starts every link and GUID, in HTML attributes,
#: ``Link`` headers and XML, so nothing there may need escaping or a browser's repair.
_BASE_URL = re.compile(
    r"(?i:https?)://(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])"
    r"(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*",
    re.ASCII,
)


def _valid_base_url(url: str) -> bool:
    if _BASE_URL.fullmatch(url) is None:
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # "[...]" that is no IP address, a port out of range
        return False
    return bool(parts.hostname) and port != 0
