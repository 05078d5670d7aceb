"""Schemathesis over both OpenAPI specs, against real uvicorn servers (tests/fuzz_openapi.py).

Every operation of the edge's and the hub's spec, positive and negative cases, with the
credential each route's role table names (``edge.access.ROUTES``, ``hub.roles.ROUTES``):
no 5xx, a declared status carries its declared body, every 4xx says why; rate limits may
answer 429. The edge keeps serving valid MQTT check-ins (a card each) during its run.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import httpx

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge
from hub.devtools import EmbeddedHub
from tests.edge_env import make_env
from tests.fuzz_live import FUZZ_LIMITS, CheckinLoad
from tests.fuzz_openapi import run_spec
from tests.fuzz_payloads import Generator

EXAMPLES = 25  # positive cases per operation
NEGATIVE = 12  # negative cases per operation
BODIES = 600  # generated event payloads over HTTP (tests/fuzz_payloads.py)
BEARER = "Authorization"


def test_schemathesis_over_the_edge_spec_while_check_ins_keep_flowing(
    tmp_path: Path, tafeng_zip: Path, fresh_broker: PrivateBroker
) -> None:
    from tests.auth_env import edge_token

    env = make_env(tmp_path, tafeng_zip, fresh_broker.port, n_products=120, n_members=20,
                   rate_limits=FUZZ_LIMITS)
    admin = edge_token(env.settings.db_path, "admin")
    tablet = env.tablet_token

    def credentials(method: str, path: str) -> tuple[dict[str, str], dict[str, str]]:
        from edge.access import ROUTES

        rule = ROUTES.get((method, path))
        if rule is None or rule.public:
            return {}, {}
        token = tablet if "device" in rule.roles else admin
        return {BEARER: f"Bearer {token}"}, {}

    started = time.perf_counter()
    with EmbeddedEdge(env.settings) as edge, CheckinLoad(env, fresh_broker.port,
                                                         interval_s=0.05) as load:
        report = run_spec("edge", edge.url, credentials, examples=EXAMPLES,
                          negative_examples=NEGATIVE,
                          skip={"GET /v1/stream": "server-sent events never end"})
        # the spec has no body schema for the event routes (raw MQTT-style payloads):
        # the MQTT fuzzer's payloads go over HTTP too
        bodies = _post_generated_bodies(edge.url, admin, tablet)
        load.stop(settle_s=10)
        alive = edge.runtime.dispatcher.running
    summary = {**report.as_dict(), "load": load.summary(), "event_bodies": dict(bodies),
               "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps({"schemathesis": summary}, sort_keys=True))
    assert not report.failures, "\n".join(report.failures[:20])
    assert len(report.operations) >= 10 and sum(report.cases.values()) >= 10 * EXAMPLES
    assert alive and load.sent and not load.missing(), load.summary()
    assert not [k for k in bodies if k.startswith("bad")], dict(bodies)


def _post_generated_bodies(url: str, admin: str, tablet: str) -> Counter[str]:
    """Generated valid and mutated payloads on the kiosk / till / tablet event routes:
    never a 5xx, every 4xx with a reason."""
    gen = Generator(random.Random(7), huge_max=200_000)
    routes = {"checkin": ("/v1/checkin", None), "pos": ("/v1/pos", admin),
              "staff_feedback": ("/v1/feedback", tablet)}
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=url, timeout=10) as client:
        for n in range(BODIES):
            channel = ("checkin", "pos", "staff_feedback")[n % 3]
            path, token = routes[channel]
            headers = {BEARER: f"Bearer {token}"} if token else {}
            response = client.post(path, content=gen.case(channel).payload, headers=headers)
            status = response.status_code
            seen[f"{path} {status}"] += 1
            if status >= 500 or (status >= 400 and "reason" not in response.text
                                 and "detail" not in response.text):
                seen[f"bad {path} {status}: {response.text[:100]}"] += 1
    return seen


def test_schemathesis_over_the_hub_spec(tmp_path: Path) -> None:
    started = time.perf_counter()
    with EmbeddedHub(tmp_path, stores=("s1",)) as hub:
        store_key = hub.store_keys["s1"]

        def credentials(method: str, path: str) -> tuple[dict[str, str], dict[str, str]]:
            from hub.roles import ROUTES

            roles = ROUTES.get((method, path))
            if not roles:
                return {}, {}
            if "store" in roles and "{store}" in path:
                return {BEARER: f"Bearer {store_key}"}, {"store": "s1"}
            token = hub.admin_token if "admin" in roles else hub.app_token
            return {BEARER: f"Bearer {token}"}, {}

        report = run_spec("hub", hub.url, credentials, examples=EXAMPLES,
                          negative_examples=NEGATIVE)
    summary = {**report.as_dict(), "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps({"schemathesis": summary}, sort_keys=True))
    assert not report.failures, "\n".join(report.failures[:20])
    assert len(report.operations) >= 40 and sum(report.cases.values()) >= 40 * EXAMPLES


def test_a_hub_refusal_with_a_reason_matches_the_declared_422(tmp_path: Path) -> None:
    """Found by schemathesis: 30 hub operations answered 422 ``{"detail": {"reason": ...}}``
    (e.g. a bad feed cursor) where the spec declared only FastAPI's validation list. The spec
    now declares both (hub.openapi_refusals); FastAPI's own 422 still validates too."""
    import schemathesis
    from schemathesis.specs.openapi.checks import response_schema_conformance

    with EmbeddedHub(tmp_path, stores=("s1",)) as hub:
        schema = schemathesis.openapi.from_url(f"{hub.url}/openapi.json")
        headers = {BEARER: f"Bearer {hub.store_keys['s1']}"}
        operation = schema["/v1/stores/{store}/feed/profiles"]["GET"]
        for query, reason in (({"cursor": "not-a-cursor"}, "bad_cursor"),
                              ({"limit": "many"}, None)):
            case = operation.Case(path_parameters={"store": "s1"}, query=query)
            response = case.call(base_url=hub.url, headers=headers, timeout=10)
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert (detail["reason"] == reason) if reason else isinstance(detail, list)
            case.validate_response(response, checks=[response_schema_conformance])
