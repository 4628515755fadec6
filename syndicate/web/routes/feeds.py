"""Topic feeds over HTTP: rendering cache, validators, conditional GET, gzip, paging.

A read of an unchanged feed costs one indexed lookup (``Storage.feed_state``)
and no rendering: the rendered bytes are cached per (topic, format, page) with
the state they were rendered from. Every write marks the topics it touches, so
any instance sharing the database sees the change on its next read.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import quote

from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

import feeds
from storage import Storage
from storage.records import FeedState
from syndicate.content.articles import BadCursor, decode_cursor, encode_cursor
from syndicate.content.render import build_feed, feed_url, last_modified, tombstones, topic_meta
from syndicate.content.validation import invalid
from syndicate.core.names import ALL_TOPICS_SLUG, TOPIC_SLUG, TOPIC_SLUG_RE
from syndicate.core.settings import Settings
from syndicate.web.appkeys import SETTINGS, STORAGE
from syndicate.web.middleware import Handler, fast_path
from syndicate.web.requests import not_modified

DEFAULT_CACHE_ENTRIES = 256

routes = web.RouteTableDef()  # the feed route itself is ``FeedResource``
_TOPIC = TOPIC_SLUG_RE
_PREFIX = "/feeds/"
_KNOWN_PATHS = 4096  # feed paths remembered as matched (topic, format), then forgotten

CacheKey = tuple[str, str, str]
StateToken = tuple[int, datetime | None]


@dataclass(frozen=True)
class Rendered:
    """One rendered feed page, with the response headers of each answer built once:
    an unchanged feed is answered from here without formatting anything."""

    body: bytes
    gzipped: bytes
    etag: str
    last_modified: datetime
    link: str
    content_type: str
    max_age: int

    @functools.cached_property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gzip"'

    @functools.cached_property
    def http_date(self) -> str:
        return format_datetime(self.last_modified.astimezone(UTC), usegmt=True)

    @functools.cached_property
    def not_modified_headers(self) -> tuple[CIMultiDict[str], CIMultiDict[str]]:
        """The 304's headers, (identity, gzip): what RFC 9110 §15.4.5 asks a 304 to
        repeat (ETag, Cache-Control, Vary) and no other metadata: a cache keeps
        the rest from the response it stored."""
        common = {
            "Cache-Control": f"public, max-age={self.max_age}",
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        return (
            CIMultiDict({"ETag": self.etag, **common}),
            CIMultiDict({"ETag": self.gzip_etag, **common}),
        )

    @functools.cached_property
    def ok_headers(self) -> tuple[CIMultiDict[str], CIMultiDict[str]]:
        """The 200's headers: (identity, gzip)."""
        identity, gzipped = self.not_modified_headers
        full = {
            "Last-Modified": self.http_date,
            "Link": self.link,
            "Content-Type": self.content_type,
        }
        return (
            CIMultiDict(identity, **full),
            CIMultiDict(gzipped, **full, **{"Content-Encoding": "gzip"}),
        )


class FeedCache:
    """Rendered feeds by (topic, format, page), each valid for one feed state."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, tuple[StateToken, Rendered]] = OrderedDict()
        self.hits = 0
        self.renders = 0

    def get(self, key: CacheKey, token: StateToken) -> Rendered | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != token:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: CacheKey, token: StateToken, rendered: Rendered) -> None:
        self.renders += 1
        self._entries[key] = (token, rendered)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


FEED_CACHE = web.AppKey("feed_cache", FeedCache)


async def _render(
    storage: Storage,
    settings: Settings,
    topic: str,
    fmt: feeds.FeedFormat,
    before_raw: str,
    state: FeedState,
) -> Rendered:
    base = settings.base_url
    meta = await topic_meta(storage, base, topic)
    before = decode_cursor(before_raw) if before_raw else None
    limit = settings.feed_items
    scope = None if topic == ALL_TOPICS_SLUG else topic
    articles = await storage.list_articles(topic=scope, limit=limit + 1, before=before)
    page = articles[:limit]
    self_url = feed_url(base, topic, fmt)
    first_url = self_url
    if before_raw:
        self_url += f"?before={quote(before_raw, safe='')}"
    next_url = None
    if len(articles) > limit:
        next_url = f"{first_url}?before={encode_cursor(page[-1])}"
    updated = last_modified(state, meta.created_at)
    deleted = [] if before_raw else await tombstones(storage, topic, fmt, updated)
    body = build_feed(
        base,
        topic,
        fmt,
        meta,
        page,
        self_url=self_url,
        updated=updated,
        next_url=next_url,
        deleted=deleted,
    )
    hub = f"{base}/hub"
    return Rendered(
        body=body,
        gzipped=gzip.compress(body, compresslevel=6, mtime=0),
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        last_modified=updated,
        link=f'<{hub}>; rel="hub", <{self_url}>; rel="self"',
        content_type=feeds.CONTENT_TYPES[fmt],
        max_age=settings.feed_page_max_age if before_raw else settings.feed_max_age,
    )


def _accepts_gzip(header: str) -> bool:
    if not header:
        return False
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=").strip()
            try:
                return not q or float(q) > 0
            except ValueError:
                return True
    return False


def _cached(request: web.Request) -> web.StreamResponse | None:
    """The answer from what this process already holds: the first page of a feed
    whose state the storage knows to be current and whose rendering is cached.
    None sends the request down the full path (``feed``)."""
    if request.query_string:
        return None
    match_info = request.match_info
    topic = match_info["topic"]
    app = request.app
    state = app[STORAGE].cached_feed_state(None if topic == ALL_TOPICS_SLUG else topic)
    if state is None:
        return None
    rendered = app[FEED_CACHE].get((topic, match_info["fmt"], ""), (state.seq, state.updated_at))
    return None if rendered is None else _answer(request, rendered)


def _answer(request: web.Request, rendered: Rendered) -> web.Response:
    variant = _accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
    if not_modified(request, (rendered.etag, rendered.gzip_etag), rendered.last_modified):
        return web.Response(status=304, headers=rendered.not_modified_headers[variant])
    body = rendered.gzipped if variant else rendered.body
    return web.Response(body=body, headers=rendered.ok_headers[variant])


@fast_path(_cached)
async def feed(request: web.Request) -> web.StreamResponse:
    match_info = request.match_info
    topic = match_info["topic"]
    fmt: feeds.FeedFormat = match_info["fmt"]  # type: ignore[assignment]
    before_raw = request.query.get("before", "")
    if before_raw:
        try:
            decode_cursor(before_raw)
        except BadCursor as exc:
            raise invalid("before", str(exc)) from None
    app = request.app
    storage = app[STORAGE]
    cache = app[FEED_CACHE]
    state = await storage.feed_state(None if topic == ALL_TOPICS_SLUG else topic)
    token: StateToken = (state.seq, state.updated_at)
    key = (topic, fmt, before_raw)
    rendered = cache.get(key, token)
    if rendered is None:
        rendered = await _render(storage, app[SETTINGS], topic, fmt, before_raw, state)
        cache.put(key, token, rendered)
    return _answer(request, rendered)


class FeedResource(web.Resource):
    """``/feeds/{topic}.{fmt}``, matched with string operations and one short regex:
    aiohttp's ``DynamicResource`` runs a regex over the whole path and unquotes every
    part into a new dict, a tenth of a revalidation's cost on this route, which
    carries the read load. Topics never hold ``%``, so no unquoting is needed."""

    def __init__(self) -> None:
        super().__init__(name="feed")
        self._known: dict[str, tuple[str, str]] = {}  # path -> (topic, fmt) matched

    @property
    def canonical(self) -> str:
        return _PREFIX + "{topic}.{fmt}"

    def _match(self, path: str) -> dict[str, str] | None:
        known = self._known.get(path)
        if known is None:
            if not path.startswith(_PREFIX):
                return None
            topic, _, fmt = path[len(_PREFIX) :].rpartition(".")
            if fmt not in feeds.FORMATS or _TOPIC.fullmatch(topic) is None:
                return None
            if len(self._known) >= _KNOWN_PATHS:
                self._known.clear()
            known = self._known[path] = (topic, fmt)
        return {"topic": known[0], "fmt": known[1]}

    def raw_match(self, path: str) -> bool:
        return path == self.canonical

    def add_prefix(self, prefix: str) -> None:
        raise NotImplementedError("the feed route is not mounted under a prefix")

    def get_info(self) -> dict[str, str]:  # type: ignore[override]
        return {"formatter": self.canonical}

    def url_for(self, *, topic: str, fmt: str) -> URL:  # type: ignore[override]
        return URL.build(path=f"{_PREFIX}{topic}.{fmt}", encoded=True)

    def __repr__(self) -> str:
        return f"<FeedResource {self.canonical}>"


def add_feed_route(app: web.Application, handler: Handler, *, fast: bool = True) -> None:
    """Register ``GET``/``HEAD /feeds/{topic}.{fmt}`` with ``handler`` (``feed``
    as the app wraps every route). ``fast`` (the ``fast_paths`` setting): matched by
    ``FeedResource``, which implements aiohttp's private ``Resource._match``; off,
    by aiohttp's own ``DynamicResource``, which answers the same URLs the same way."""
    if fast:
        resource: web.AbstractResource = FeedResource()
        app.router.register_resource(resource)
    else:
        formats = "|".join(feeds.FORMATS)
        resource = app.router.add_resource(
            _PREFIX + "{topic:" + TOPIC_SLUG + "}.{fmt:" + formats + "}", name="feed"
        )
    assert isinstance(resource, web.Resource)
    resource.add_route("HEAD", handler)
    resource.add_route("GET", handler)
