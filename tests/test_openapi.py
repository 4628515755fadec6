"""/openapi.json is generated from the models, and the running service honours it:
schemathesis sends generated requests (valid and invalid) to a real `syndicate
serve` and checks every answer against the document: no 5xx, status codes,
content types and bodies as documented."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from conftest import Client, ServerFactory, clean_env, free_port
from hypothesis import HealthCheck, settings
from receiver import Receiver
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance

from syndicate.content.models import valid_article_id
from syndicate.content.urls import HTTP_URL_PATTERN
from syndicate.core.settings import Settings
from syndicate.web import openapi
from syndicate.web.app import create_app

DOCUMENT = openapi.build(Settings())
#: The event stream does not end by itself: a generated call would wait on it until its
#: timeout. Its answers are checked below and in test_events_stream.py.
STREAM = "/api/events/stream"
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path=STREAM)


# Stateful runs walk the links, but not "delivery log -> retry": deliveries appear when
# the background fan-out gets to them, so a replayed scenario could find the log empty
# where the first run found an entry, and Hypothesis needs replays to behave the same.
def _without_delivery_links(document: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(document))
    log = copy["paths"]["/api/subscriptions/{id}/deliveries"]["get"]["responses"]["200"]
    log.pop("links")
    return copy


stateful_schema = schemathesis.openapi.from_dict(_without_delivery_links(DOCUMENT)).exclude(
    path=STREAM
)
# Nor links schemathesis would infer from list answers (GET /api/articles -> PUT the
# first one listed): the server outlives scenarios, so what a list holds depends on
# every scenario before, and a replay would find another first item, or none. The
# document's own links (from the answer to a write) are walked.
stateful_schema.config.phases.stateful.inference.algorithms = []
for _schema in (schema, stateful_schema):
    # A schema-valid read of a deleted article is answered 410 Gone, as documented.
    _accepted = _schema.config.checks.positive_data_acceptance
    _accepted.expected_statuses = [*_accepted.expected_statuses, "410"]
#: Subscriptions point at a closed port on 127.0.0.1: no traffic leaves the machine.
HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("openapi")
    port = free_port()
    env = clean_env(
        SYNDICATE_DATABASE=f"sqlite:///{folder / 'db.sqlite'}",
        SYNDICATE_ALLOW_PRIVATE_TARGETS="1",
        SYNDICATE_WRITE_BURST="100000",
        # many examples create many subscriptions: a cap reached midway would make
        # later steps depend on earlier runs (and Hypothesis call the test flaky)
        SYNDICATE_MAX_SUBSCRIPTIONS="1000000",
        SYNDICATE_LOG_LEVEL="warning",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "syndicate", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    token = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip().startswith("syn_"):
            token = line.strip()
        if "listening on" in line:
            break
    base = f"http://127.0.0.1:{port}"
    seed = json.dumps({"id": "seed", "title": "Seed", "content": "x", "topics": ["t"]}).encode()
    request = urllib.request.Request(
        f"{base}/api/articles",
        data=seed,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    # Configured auth: schemathesis sends the operator token, and knows that when it
    # sends another (its ignored-auth check) a 401 must come back.
    for each in (schema, stateful_schema):
        each.config.update(base_url=base, headers={"Authorization": f"Bearer {token}"})
    yield {"base": base, "token": token}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    proc.stdout.close()


def test_document_is_served_and_written(service: dict[str, str], tmp_path: Path) -> None:
    with urllib.request.urlopen(f"{service['base']}/openapi.json", timeout=10) as response:
        served = json.loads(response.read())
    assert served["openapi"] == "3.1.0"
    assert set(served["paths"]) == set(DOCUMENT["paths"])
    assert "bearer" in served["components"]["securitySchemes"]
    problem = served["components"]["schemas"]["ProblemOut"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    committed = Path(__file__).parent.parent / "docs" / "openapi.json"
    written = json.loads(committed.read_text())
    assert written["paths"] == DOCUMENT["paths"], "docs/openapi.json is stale: make openapi"


def test_document_links_name_real_operations() -> None:
    operations = {
        op["operationId"]: (path, op)
        for path, item in DOCUMENT["paths"].items()
        for op in item.values()
    }
    links = [
        link
        for _, op in operations.values()
        for response in op["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) >= 12
    for link in links:
        path, _ = operations[link["operationId"]]
        assert set(link["parameters"]) == set(re.findall(r"{(\w+)}", path))


def _aim_at_loopback(case: Any) -> None:
    """A valid subscription target is rewritten to a closed port on 127.0.0.1; a
    long-poll does not wait (for an event that may never come)."""
    if case.path == "/api/events" and case.query and "wait" in case.query:
        case.query["wait"] = 0
    url = case.body.get("url") if isinstance(case.body, dict) else None
    if "subscriptions" in case.path and isinstance(url, str) and len(url) <= 2048:
        if re.match(HTTP_URL_PATTERN, url):
            case.body["url"] = HOOK


def _exclusions(case: Any) -> list[schemathesis.CheckFunction]:
    """Checks that cannot judge this case, and why."""
    # A cursor is opaque: a well-formed one the service never issued is rightly
    # refused (422), which the "schema-valid data is accepted" check cannot know.
    excluded: list[schemathesis.CheckFunction] = (
        [positive_data_acceptance] if case.query and "cursor" in case.query else []
    )
    # A PUT body's optional id must equal the id in the path: a rule across
    # parameters that a JSON schema cannot state.
    body_id = case.body.get("id") if isinstance(case.body, dict) else None
    if case.method == "PUT" and body_id is not None and body_id != case.path_parameters.get("id"):
        excluded.append(positive_data_acceptance)
    # /api/articles/batch is also /api/articles/{id} with id "batch" (an article
    # may have that id), so its Allow header rightly lists GET, PUT and DELETE.
    if case.path == "/api/articles/batch":
        excluded.append(allow_header_conformance)
    # A change-log position or a topic the schema allows may not be one this log has
    # (400/404/410, 422 for an unknown topic).
    if case.path.startswith("/api/events") and case.query and {"after", "topics"} & set(case.query):
        excluded.append(positive_data_acceptance)
    return excluded


def test_api_statefully(service: dict[str, str]) -> None:
    """Sequences that follow the document's links (create an article, then read,
    replace and delete it; subscribe, then rotate, ping, list deliveries, retry):
    no 5xx, every answer as documented."""

    class Workflow(stateful_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.run_id = uuid.uuid4().hex[:8]

        def before_call(self, case: Any) -> None:
            _aim_at_loopback(case)
            # The server outlives scenarios, and Hypothesis replays them: a POST of
            # an id an earlier run created would now be 409 and the scenario take
            # another path. An explicit id is made this run's own.
            body = case.body
            if case.method == "POST" and case.path == "/api/articles" and isinstance(body, dict):
                if isinstance(body.get("id"), str) and valid_article_id(body["id"]):
                    body["id"] = f"{body['id'][:100]}-{self.run_id}"

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": service["base"], "timeout": 10}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            kwargs.pop("additional_checks", None)
            case.validate_response(
                response, excluded_checks=_exclusions(case), transport_kwargs=kwargs
            )

    Workflow.run(
        settings=settings(
            max_examples=int(os.environ.get("SYNDICATE_FUZZ_EXAMPLES", "12")),
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("SYNDICATE_FUZZ_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms(case: Any, service: dict[str, str]) -> None:
    _aim_at_loopback(case)
    case.call_and_validate(
        base_url=service["base"],
        headers={"Authorization": f"Bearer {service['token']}"},
        excluded_checks=_exclusions(case),
        timeout=10,
    )


# -- every documented answer, for real --------------------------------------------
#
# Schemathesis (above) explores with generated input and may never reach, say, a
# retry's 202. Here each documented operation is called so that it succeeds with
# each documented success status, and once so that it fails, and each body is
# checked against the document's schema for that status.


def _validator(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.Draft202012Validator({**schema, "components": DOCUMENT["components"]})


class Checked:
    """Calls the service and checks each answer against /openapi.json."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: set[tuple[str, str, int]] = set()

    async def call(
        self, method: str, template: str, expect: int, *, token: str | None = None, **kw: Any
    ) -> Any:
        path = template.format(**kw.pop("at", {}))
        async with self.client.request(method, path, token=token, **kw) as response:
            raw = await response.read()
            assert response.status == expect, raw
            documented = DOCUMENT["paths"][template][method.lower()]["responses"]
            assert str(expect) in documented, f"{method} {template} answered undocumented {expect}"
            self.seen.add((method.lower(), template, expect))
            content = documented[str(expect)].get("content")
            if content is None:
                assert raw == b""
                return None
            [(media_type, described)] = content.items()
            assert response.content_type == media_type
            body = json.loads(raw)
            errors = [e.message for e in _validator(described["schema"]).iter_errors(body)]
            assert not errors, f"{method} {path} -> {expect}: {errors}"
            return body


async def test_every_documented_answer_is_what_the_service_sends(
    start_server: ServerFactory, tokens: dict[str, str], receiver: Receiver
) -> None:
    client = await start_server(allow_private_targets=True)
    client.token = tokens["operator"]
    api = Checked(client)
    article = {"id": "a1", "title": "One", "content": "<p>x</p>", "topics": ["liver"]}
    created = await api.call("POST", "/api/articles", 201, json=article)
    await api.call("POST", "/api/articles", 409, json=article)
    await api.call("POST", "/api/articles", 401, token="", json=article)
    for n in range(2, 4):
        await api.call(
            "PUT", "/api/articles/{id}", 201, at={"id": f"a{n}"}, json={**article, "id": f"a{n}"}
        )
    await api.call(
        "PUT", "/api/articles/{id}", 200, at={"id": "a1"}, json={**article, "title": "One, again"}
    )
    await api.call("PUT", "/api/articles/{id}", 422, at={"id": "a1"}, json={"title": ""})
    page = await api.call("GET", "/api/articles", 200)
    assert created["id"] in [a["id"] for a in page["articles"]]
    first = await api.call("GET", "/api/articles", 200, params={"limit": "1"})
    assert first["next_cursor"]
    await api.call("GET", "/api/articles", 404, params={"topic": "nope"})
    await api.call(
        "POST",
        "/api/articles/batch",
        200,
        json={"articles": [{**article, "id": "b1"}, {"title": 1}]},
    )
    await api.call("GET", "/api/articles/{id}", 200, at={"id": "a1"})
    await api.call("DELETE", "/api/articles/{id}", 204, at={"id": "a3"})
    await api.call("GET", "/api/articles/{id}", 410, at={"id": "a3"})
    await api.call("GET", "/api/articles/{id}", 404, at={"id": "none"})
    await api.call("GET", "/api/topics", 200)
    events = await api.call("GET", "/api/events", 200, params={"limit": "2"})
    assert len(events["events"]) == 2 and events["has_more"]
    await api.call("GET", "/api/events", 400, params={"after": "nonsense"})
    changed = {"updated_since": "2020-01-01T00:00:00Z"}
    assert (await api.call("GET", "/api/articles", 200, params=changed))["articles"]
    await api.call("PUT", "/api/topics/{slug}", 201, at={"slug": "new"}, json={})
    await api.call("PUT", "/api/topics/{slug}", 200, at={"slug": "new"}, json={"title": "N"})
    await api.call(
        "PUT", "/api/topics/{slug}", 403, at={"slug": "new"}, json={}, token=tokens["partner"]
    )

    hook = {"url": receiver.url("/hook"), "topics": ["*"]}
    sub = await api.call("POST", "/api/subscriptions", 201, json=hook)
    await api.call("POST", "/api/subscriptions", 415, data=b"x")
    ids = {"id": sub["id"]}
    await api.call("GET", "/api/subscriptions", 200)
    await api.call("GET", "/api/subscriptions", 422, params={"limit": "0"})
    await api.call("GET", "/api/subscriptions/{id}", 200, at=ids)
    await api.call("GET", "/api/subscriptions/{id}", 404, at={"id": "sub_none"})
    await api.call("PATCH", "/api/subscriptions/{id}", 200, at=ids, json={"events": None})
    await api.call("POST", "/api/subscriptions/{id}/rotate-secret", 200, at=ids)
    await api.call("POST", "/api/subscriptions/{id}/test", 200, at=ids)
    await api.call("PUT", "/api/articles/{id}", 201, at={"id": "a4"}, json={**article, "id": "a4"})
    log: dict[str, Any] = {"deliveries": []}
    for _ in range(100):
        log = await api.call("GET", "/api/subscriptions/{id}/deliveries", 200, at=ids)
        if log["deliveries"]:
            break
        await asyncio.sleep(0.05)
    delivery = {**ids, "delivery_id": log["deliveries"][0]["id"]}
    await api.call(
        "GET", "/api/subscriptions/{id}/deliveries", 422, at=ids, params={"status": "lost"}
    )
    await api.call(
        "POST", "/api/subscriptions/{id}/deliveries/{delivery_id}/retry", 202, at=delivery
    )
    await api.call(
        "POST",
        "/api/subscriptions/{id}/recover",
        202,
        at=ids,
        json={"since": "2020-01-01T00:00:00Z"},
    )
    await api.call("GET", "/api/subscriptions/{id}/status", 200, at=ids)
    await api.call("POST", "/api/portal-links", 201, json={"partner": "test-partner"})
    await api.call("POST", "/api/portal-links", 404, json={"partner": "nobody"})
    await api.call("DELETE", "/api/subscriptions/{id}", 204, at=ids)
    await api.call("GET", STREAM, 400, params={"after": "nonsense"})
    async with client.request("GET", STREAM) as response:  # its start: it never ends
        assert response.status == 200
        [documented_type] = DOCUMENT["paths"][STREAM]["get"]["responses"]["200"]["content"]
        assert response.content_type == documented_type
        assert await response.content.readline() == b"retry: 2000\n"
    api.seen.add(("get", STREAM, 200))
    await api.call("GET", "/healthz", 200)
    await api.call("GET", "/readyz", 200)

    documented = {
        (method, path, int(status))
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        for status in operation["responses"]
        if int(status) < 300
    }
    assert documented - api.seen == set(), "documented success answers never checked"


def test_one_route_table() -> None:
    """The app serves the documented operations from the tables that document them:
    every /api route it has is documented, and every documented one is served."""
    app = create_app(Settings())
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {(method, path) for path, item in DOCUMENT["paths"].items() for method in item}
    assert documented <= served
    api = {(method, path) for method, path in served if path.startswith("/api")}
    assert api <= documented
