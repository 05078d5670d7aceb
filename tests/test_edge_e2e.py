"""The edge on real parts: Mosquitto, SQLite, onnxruntime, uvicorn. Check-in → suggestions."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, MqttProbe, Received, wait_until
from edge.rules import RulesConfig
from edge.settings import RankingSettings
from hub.tokens import generate_signing_key, private_key_pem
from tests.edge_env import EdgeEnv, edge_fixtures, make_env, new_id

# Offers at any hour and any relevance: these tests are about consent and delivery; the
# threshold and quiet hours themselves are covered by the rules' unit tests.
NO_QUIET_HOURS = RulesConfig(quiet_hours=(0, 0), app_offer_min_relevance=0.0)


env, edge = edge_fixtures(rules=NO_QUIET_HOURS)


@pytest.fixture()
def probe(broker: PrivateBroker, env: EdgeEnv) -> Iterator[MqttProbe]:
    prefix = env.topics.prefix
    with MqttProbe(
        broker.host, broker.port, [f"{prefix}/staff/recommendations", f"{prefix}/app/+/offers"]
    ) as running:
        yield running


def metric(edge: EmbeddedEdge, name: str, **labels: str) -> float:
    """Current value of one Prometheus sample from /metrics (0 when absent)."""
    text = httpx.get(f"{edge.url}/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def staff_for(subject: str) -> Any:
    return lambda r: r.topic.endswith("/staff/recommendations") and r.payload["subject"] == subject


def check_in(env: EdgeEnv, probe: MqttProbe, subject: str, **token_kwargs: Any) -> Received:
    """Publish a check-in as the app does; the staff card it caused."""
    payload = env.checkin_payload(subject, **token_kwargs)
    probe.publish(env.topics.checkin(subject), payload)
    return probe.wait_for(
        lambda r: staff_for(subject)(r) and r.payload["trigger_event_id"] == payload["event_id"],
        timeout=10,
    )


def test_checkin_gives_ranked_personal_suggestions_on_mqtt(edge, env, probe) -> None:
    subject = env.seed.subjects[0]
    card = check_in(env, probe, subject).payload
    assert card["v"] == 1
    assert card["source"] == "model" and card["model_version"]
    assert card["display_name"] and not card["display_name"].startswith("Customer ")
    suggestions = card["suggestions"]
    assert len(suggestions) == 5
    assert [s["rank"] for s in suggestions] == [1, 2, 3, 4, 5]
    assert all(s["stock"] > 0 for s in suggestions)
    categories = [s["category"] for s in suggestions]
    assert max(categories.count(c) for c in categories) <= 2
    assert any(r for s in suggestions for r in s["reasons"])
    assert all("personalize" in s["allowed_by"] for s in suggestions)


def test_checkin_reaches_sse_listeners(edge, env, probe) -> None:
    subject = env.seed.subjects[1]
    events: list[dict[str, Any]] = []
    got_card = threading.Event()
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{edge.url}/v1/stream", headers=env.tablet,
                          timeout=10) as response:
            name = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    if name == "snapshot":
                        connected.set()
                    elif name == "recommendation":
                        events.append(json.loads(line[6:]))
                        if events[-1]["subject"] == subject:
                            got_card.set()
                            return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert connected.wait(10)
    check_in(env, probe, subject)
    assert got_card.wait(5)
    assert events[-1]["suggestions"]
    snapshot = httpx.get(f"{edge.url}/v1/visits", headers=env.tablet).json()["visits"]
    assert any(v["subject"] == subject for v in snapshot)


@pytest.mark.parametrize(
    ("case", "reason"),
    [("forged", "bad_signature"), ("expired", "expired"), ("other_store", "wrong_audience")],
)
def test_bad_tokens_are_refused_and_counted(edge, env, probe, case, reason) -> None:
    subject = env.seed.subjects[2]
    kwargs: dict[str, Any] = {}
    if case == "forged":
        kwargs["private_pem"] = private_key_pem(generate_signing_key())
    elif case == "expired":
        kwargs.update(now=time.time() - 3600, ttl_s=60)
    else:
        kwargs["store"] = "s999"
    probe.publish(env.topics.checkin(subject), env.checkin_payload(subject, **kwargs))
    wait_until(lambda: metric(edge, "storeside_tokens_rejected_total", reason=reason) == 1, 5)
    assert not probe.matching(staff_for(subject))


def test_replayed_token_is_refused(edge, env, probe) -> None:
    subject = env.seed.subjects[3]
    token = env.token(subject)
    first = {"v": 1, "event_id": new_id(), "ts": time.time(), "token": token}
    probe.publish(env.topics.checkin(subject), first)
    probe.wait_for(staff_for(subject), timeout=10)
    replay = {**first, "event_id": new_id()}
    probe.publish(env.topics.checkin(subject), replay)
    wait_until(lambda: metric(edge, "storeside_tokens_rejected_total", reason="replayed") == 1, 5)
    assert len(probe.matching(staff_for(subject))) == 1


def test_a_token_on_someone_elses_topic_is_refused_and_still_works_for_its_owner(
    edge, env, probe
) -> None:
    owner, other = env.seed.subjects[4], env.seed.subjects[5]
    token = env.token(owner)
    shown = {"v": 1, "event_id": new_id(), "ts": time.time(), "token": token}
    probe.publish(env.topics.checkin(other), shown)
    wait_until(
        lambda: metric(edge, "storeside_tokens_rejected_total", reason="subject_mismatch") == 1, 5
    )
    probe.publish(env.topics.checkin(owner), {**shown, "event_id": new_id()})
    assert probe.wait_for(staff_for(owner), timeout=10).payload["subject"] == owner
    assert not probe.matching(staff_for(other))


def test_bad_payloads_become_counted_dead_letters_and_service_lives(edge, env, probe) -> None:
    subject = env.seed.subjects[4]
    topic = env.topics.checkin(subject)
    probe.publish(topic, b"{not json")
    probe.publish(topic, {"v": 1, "event_id": new_id(), "ts": "yesterday", "token": 5})
    probe.publish(topic, {"v": 99, "event_id": new_id(), "ts": time.time(), "token": "x"})
    probe.publish(topic, b'{"pad": "' + b"x" * 100_000 + b'"}')
    probe.publish(env.topics.pos, b"\xff\xfe not utf-8")

    def dead(reason: str) -> float:
        return sum(
            metric(edge, "storeside_dead_letters_total", kind=kind, reason=reason)
            for kind in ("checkin", "pos")
        )

    wait_until(
        lambda: dead("bad_json") == 1
        and dead("invalid") == 1
        and dead("schema_version") == 1
        and dead("too_large") == 1
        and dead("bad_utf8") == 1,
        5,
    )
    assert check_in(env, probe, subject).payload["suggestions"]
    assert httpx.get(f"{edge.url}/healthz").status_code == 200


def test_kiosk_checkin_uses_the_same_validation(edge, env) -> None:
    subject = env.seed.subjects[5]
    ok = httpx.post(f"{edge.url}/v1/checkin", json=env.checkin_payload(subject), timeout=10)
    assert ok.status_code == 200
    assert len(ok.json()["card"]["suggestions"]) == 5
    forged = env.checkin_payload(subject, private_pem=private_key_pem(generate_signing_key()))
    refused = httpx.post(f"{edge.url}/v1/checkin", json=forged)
    assert refused.status_code == 401
    assert refused.json()["detail"]["reason"] == "token_bad_signature"
    bad = httpx.post(f"{edge.url}/v1/checkin", content=b"[1,2]")
    assert bad.status_code == 422 and bad.json()["detail"]["reason"] == "not_object"


def test_no_personalize_gives_popular_list_without_name(edge, env, probe) -> None:
    subject = env.seed.subjects[6]
    card = check_in(env, probe, subject, scopes=("staff_display",)).payload
    assert card["display_name"].startswith("Customer ")
    assert card["profile"] is None
    assert card["suggestions"]
    for s in card["suggestions"]:
        assert "personalize" not in s["allowed_by"]
        assert all(r["kind"] not in ("history", "copurchase", "category", "cycle")
                   for r in s["reasons"])


def test_personalize_without_staff_display_hides_name(edge, env, probe) -> None:
    subject = env.seed.subjects[7]
    card = check_in(env, probe, subject, scopes=("personalize",)).payload
    assert card["display_name"].startswith("Customer ")
    assert card["tier"] is None and card["profile"] is None
    assert any("personalize" in s["allowed_by"] for s in card["suggestions"])


def test_app_offer_only_with_app_offers_consent(edge, env, probe) -> None:
    with_consent, without = env.seed.subjects[8], env.seed.subjects[9]
    check_in(env, probe, with_consent)
    offer = probe.wait_for(lambda r: r.topic == env.topics.app_offers(with_consent), 5)
    assert offer.payload["product_id"]
    check_in(env, probe, without, scopes=("personalize", "staff_display"))
    assert not probe.matching(lambda r: r.topic == env.topics.app_offers(without))
    assert metric(edge, "storeside_app_offers_blocked_total", reason="no_consent") >= 1


def test_dismiss_removes_item_for_the_rest_of_the_visit(edge, env, probe) -> None:
    subject = env.seed.subjects[10]
    card = check_in(env, probe, subject).payload
    dismissed = card["suggestions"][0]["product_id"]
    before = len(probe.matching(staff_for(subject)))
    probe.publish(
        env.topics.feedback(),
        {"v": 1, "event_id": new_id(), "ts": time.time(), "subject": subject,
         "visit_id": card["visit_id"], "product_id": dismissed, "action": "dismissed",
         "channel": "staff"},
    )
    wait_until(lambda: len(probe.matching(staff_for(subject))) > before, 5)
    refreshed = probe.matching(staff_for(subject))[-1].payload
    assert refreshed["trigger"] == "refresh"
    assert dismissed not in [s["product_id"] for s in refreshed["suggestions"]]


def test_pos_basket_changes_the_next_ranking(edge, env, probe) -> None:
    subject = env.seed.subjects[11]
    first = check_in(env, probe, subject).payload
    ranked_before = [s["product_id"] for s in first["suggestions"]]
    # buy, on four days, items that were not suggested: they become personal history
    bought = _unsuggested_items(edge, ranked_before, 3)
    for day in range(4):
        probe.publish(
            env.topics.pos,
            {"v": 1, "event_id": new_id(), "ts": time.time() - day * 86400,
             "basket_id": new_id(), "subject": subject,
             "lines": [{"product_id": item.product_id, "quantity": 1,
                        "unit_price": item.price} for item in bought]},
        )
    wait_until(lambda: metric(edge, "storeside_messages_handled_total", kind="pos") >= 4, 5)
    second = check_in(env, probe, subject).payload
    ranked_after = [s["product_id"] for s in second["suggestions"]]
    assert ranked_after != ranked_before
    now_bought = {item.product_id for item in bought} & set(ranked_after)
    assert now_bought, "an item bought minutes ago should come up for this customer"
    for s in second["suggestions"]:
        if s["product_id"] in now_bought:
            assert any(r["kind"] == "history" for r in s["reasons"])


def _unsuggested_items(edge: EmbeddedEdge, avoid: list[str], n: int) -> list[Any]:
    items = edge.runtime.store.catalog()
    return [i for i in items if i.stock > 5 and i.product_id not in avoid][-n:]


def test_zone_dwell_reranks_with_that_zones_items(edge, env, probe) -> None:
    subject = env.seed.subjects[12]
    check_in(env, probe, subject)
    zone = "dairy"
    for i in range(3):
        probe.publish(
            env.topics.beacon(subject),
            {"v": 1, "event_id": new_id(), "ts": time.time(), "subject": subject,
             "zone": zone, "beacon_id": f"b{i}", "rssi": -60},
            qos=0,
        )
    dwell = probe.wait_for(
        lambda r: staff_for(subject)(r) and r.payload["trigger"] == "zone_dwell", 10
    ).payload
    assert dwell["zone"] == zone
    assert dwell["suggestions"]
    assert {s["zone"] for s in dwell["suggestions"]} == {zone}


def test_ops_endpoints_and_openapi(edge, env) -> None:
    assert httpx.get(f"{edge.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{edge.url}/readyz")
    assert ready.status_code == 200 and ready.json()["mqtt_connected"] is True
    status = httpx.get(f"{edge.url}/v1/status").json()
    assert status["state"] == "online" and status["model_version"]
    spec = httpx.get(f"{edge.url}/openapi.json").json()
    for path in ("/v1/checkin", "/v1/feedback", "/v1/pos", "/v1/stream", "/metrics"):
        assert path in spec["paths"]
    assert httpx.get(f"{edge.url}/v1/visits/nope/recommendations",
                     headers=env.tablet).status_code == 404
    bad = httpx.post(f"{edge.url}/v1/feedback", json={"v": 1, "event_id": "x"},
                     headers=env.tablet)
    assert bad.status_code == 422 and bad.json()["detail"]["reason"] == "invalid"
    big = httpx.post(f"{edge.url}/v1/pos", content=b"x" * 100_000)
    assert big.status_code == 413


def test_broken_bundle_degrades_to_popular_visibly(tmp_path, tafeng_zip, broker) -> None:
    broken = tmp_path / "bundle"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    (broken / "model.onnx").write_bytes(b"garbage")
    env = make_env(tmp_path, tafeng_zip, broker.port,
                   ranking=RankingSettings(bundle_dir=broken))
    with EmbeddedEdge(env.settings) as edge, MqttProbe(
        broker.host, broker.port, [env.topics.staff_recommendations]
    ) as probe:
        status = httpx.get(f"{edge.url}/v1/status").json()
        assert status["state"] == "degraded" and status["model_error"]
        assert metric(edge, "storeside_model_loaded") == 0
        assert httpx.get(f"{edge.url}/readyz").status_code == 200  # degraded, still serving
        card = check_in(env, probe, env.seed.subjects[0]).payload
        assert card["source"] == "popular" and card["model_version"] is None
        assert card["suggestions"]
