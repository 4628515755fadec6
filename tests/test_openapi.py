"""/openapi.json is generated from the models, and the running service honours it:
schemathesis sends generated requests (valid and invalid) to a real `syndicate
serve` and checks every answer against the document: no 5xx, status codes,
content types and bodies as documented."""

from __future__ import annotations

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

import pytest
import schemathesis
from conftest import clean_env, free_port
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance

from syndicate.content.models import HTTP_URL_PATTERN, valid_article_id
from syndicate.core.settings import Settings
from syndicate.web import openapi

DOCUMENT = openapi.build(Settings())
schema = schemathesis.openapi.from_dict(DOCUMENT)


# Stateful runs walk the links, but not "delivery log -> retry": deliveries appear when
# the background fan-out gets to them, so a replayed scenario could find the log empty
# where the first run found an entry, and Hypothesis needs replays to behave the same.
def _without_delivery_links(document: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(document))
    log = copy["paths"]["/api/subscriptions/{id}/deliveries"]["get"]["responses"]["200"]
    log.pop("links")
    return copy


stateful_schema = schemathesis.openapi.from_dict(_without_delivery_links(DOCUMENT))
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
    """A valid subscription target is rewritten to a closed port on 127.0.0.1."""
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
