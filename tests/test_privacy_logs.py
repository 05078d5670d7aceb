"""Privacy proof: a whole simulated store day at DEBUG leaks no name, e-mail, birthday or
loyalty number into a log line, a metric, the status topic or a dead letter.

Real parts: a ``storeside-hub serve`` process (``-v``: root logger at DEBUG, log file), a CRM
CSV imported through the hub's API (names, e-mails, birthdays, loyalty numbers: the hub
turns each loyalty number into the pseudonymous subject), half a year of baskets pushed to
the hub as a store would, an edge synced to it (in this process, so EVERY logger, library
ones included, is set to DEBUG and written to a file), Mosquitto, and the simulator playing
the whole store day (``edge.simulator.Simulator`` with check-in tokens from the hub's app
API). Then the unhappy paths that carry personal data in: malformed messages with an e-mail
or a loyalty number inside, a consent change, an erasure. Finally the edge's ``/metrics``
and ``/v1/status``, the hub's ``/metrics``, overview and erasure status, the retained status
topic and every dead letter are collected beside the two log files and searched.

Positive controls make a pass mean something: the names really travel (staff cards carry
first names by consent), the logs really are at DEBUG, and a deliberately logged e-mail is
found by the same search.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.demo_store import demo_population, generate_demo_store
from edge.devtools import EmbeddedEdge, MqttProbe
from edge.probe import wait_until
from edge.rules import RulesConfig
from edge.settings import EdgeSettings, HttpSettings, HubLinkSettings, MqttSettings
from edge.sim_day import plan_day
from edge.simulator import Simulator
from edge.visit import VisitConfig
from hub.devtools import HubProcess, hub_settings
from tests.privacy_day import Person, crm_csv, find_leaks, needles, people
from tests.sync_env import QUICK_LINK, db_rows

CHAIN, STORE, SALT = "privchain", "demo-001", "privacy-proof-secret"
N_MEMBERS, SEED = 60, 7
SPEED = 2400.0  # store seconds per wall second: the 12-hour day in ~18 s


@pytest.fixture()
def debug_log(tmp_path: Path) -> Iterator[Path]:
    """Root and every logger known so far at DEBUG into a file; levels restored after."""
    path = tmp_path / "test-process.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved = {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
             if isinstance(lg, logging.Logger)}
    saved_root = root.level
    root.addHandler(handler)
    all_debug()
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(saved_root)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def all_debug() -> None:
    """Every logger at DEBUG, also those production code quietened (httpx)."""
    logging.getLogger().setLevel(logging.DEBUG)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.DEBUG)


def edge_settings(workdir: Path, hub: HubProcess, broker: PrivateBroker) -> EdgeSettings:
    """As the demo: visit timers divided by the speed, quiet hours off, caps raised."""
    base = VisitConfig()
    visit = VisitConfig(zone_min_dwell_s=base.zone_min_dwell_s / SPEED,
                        exit_grace_s=base.exit_grace_s / SPEED,
                        visit_timeout_s=base.visit_timeout_s / SPEED,
                        zone_switch_stale_s=base.zone_switch_stale_s / SPEED)
    return EdgeSettings(
        chain=CHAIN, store=STORE, db_path=workdir / "edge.db", http=HttpSettings(port=0),
        mqtt=MqttSettings(port=broker.port, client_id=f"edge-priv-{uuid.uuid4().hex[:6]}"),
        hub=HubLinkSettings(hub_url=hub.url, store_key=hub.store_keys[STORE], **QUICK_LINK),
        visit=visit,
        rules=RulesConfig(quiet_hours=(0, 0), max_impressions_per_day=2_000,
                          max_app_offers_per_day=100),
        tick_interval_s=0.05,
    )


def set_up_hub(hub: HubProcess, population: Any, persons: list[Person], now: float) -> None:
    """Catalog + assortment, the CRM import, and half a year of the members' baskets sent
    the way a store sends them (so the profile feed carries real histories)."""
    admin = hub.admin()
    products = population.products
    admin.put("/v1/catalog/products", json={"products": [
        {"product_id": p.product_id, "name": p.name, "category": p.category, "price": p.price,
         "brand": p.brand, "style_id": p.style_id} for p in products
    ]}).raise_for_status()
    admin.put(f"/v1/stores/{STORE}/assortment", json={"items": [
        {"product_id": p.product_id, "zone": p.zone, "stock": max(p.stock, 0) + 500}
        for p in products if p.stock > 0
    ]}).raise_for_status()
    answer = admin.post("/v1/members/import", content=crm_csv(persons, STORE).encode(),
                        headers={"Content-Type": "text/csv"})
    answer.raise_for_status()
    assert answer.json()["created"] == len(persons), answer.json()
    demo = generate_demo_store(SEED, now=now, n_members=len(persons))
    subject_of = {old.subject: p.subject for old, p in zip(demo.population.members, persons,
                                                             strict=True)}
    baskets: dict[str, list[Any]] = defaultdict(list)
    for t in demo.history:
        baskets[t.basket_id].append(t)
    events = []
    for basket_id, lines in baskets.items():
        event_id, ts, subject = uuid.uuid4().hex, lines[0].timestamp, subject_of[
            lines[0].customer_id]
        events.append({"event_id": event_id, "kind": "pos_basket", "subject": subject,
                       "created_at": ts, "payload": {
                           "v": 1, "event_id": event_id, "ts": ts, "basket_id": basket_id,
                           "subject": subject,
                           "lines": [{"product_id": t.product_id, "quantity": t.quantity,
                                      "unit_price": t.price} for t in lines]}})
    store = hub.store(STORE)
    for start in range(0, len(events), 1000):
        batch = {"events": events[start:start + 1000]}
        reply = store.post(f"/v1/stores/{STORE}/events", json=batch)
        reply.raise_for_status()
        assert not reply.json()["refused"], reply.json()["refused"][:3]


def test_a_store_day_at_debug_leaks_no_personal_data(
    tmp_path: Path, broker: PrivateBroker, debug_log: Path
) -> None:
    population, persons = people(demo_population(SEED, N_MEMBERS), SALT)
    vocabulary = " ".join(f"{p.name} {p.brand} {p.category} {p.zone}"
                          for p in population.products)
    wanted = needles(persons, vocabulary)
    hubdir = tmp_path / "hub"
    hubdir.mkdir()
    hub = HubProcess(hubdir, stores=(STORE,), log_level="DEBUG",
                     settings=hub_settings(hubdir, chain=CHAIN, pseudonym_salt=SALT)).start()
    edge: EmbeddedEdge | None = None
    sources: dict[str, str] = {}
    try:
        set_up_hub(hub, population, persons, time.time())
        edge = EmbeddedEdge(edge_settings(tmp_path, hub, broker)).start()
        all_debug()  # again: the edge's start quietened httpx, new loggers appeared
        db = edge.settings.db_path
        wait_until(lambda: db_rows(db, "SELECT COUNT(*) FROM profiles")[0][0] == N_MEMBERS
                   and db_rows(db, "SELECT COUNT(*) FROM sync_keys")[0][0] > 0, 30, 0.05)
        topics = edge.settings.topics()
        watch = MqttProbe(broker.host, broker.port, [topics.status, topics.dead_letters,
                                                     topics.staff_recommendations]).start()
        summary = play_day(broker, topics, hub, population)
        unhappy_paths(hub, edge, watch, topics, persons)
        # everything queued reached the hub (so the hub logged its ingestion too)
        wait_until(lambda: httpx.get(f"{edge.url}/v1/status").json()["outbox_pending"] == 0,
                   30, 0.05)
        sources["edge /metrics"] = httpx.get(f"{edge.url}/metrics").text
        sources["edge /v1/status"] = httpx.get(f"{edge.url}/v1/status").text
        sources["hub overview"] = hub.admin().get("/v1/admin/overview").text
        hub_metrics = hub.admin().get("/metrics")
        assert hub_metrics.status_code == 200
        sources["hub /metrics"] = hub_metrics.text
        sources["mqtt status (retained)"] = "\n".join(
            json.dumps(r.payload) for r in watch.matching(lambda r: r.topic == topics.status))
        sources["mqtt dead letters"] = "\n".join(
            json.dumps(r.payload)
            for r in watch.matching(lambda r: r.topic == topics.dead_letters))
        cards = watch.matching(lambda r: r.topic == topics.staff_recommendations)
        watch.stop()
        # positive control: the same search finds a deliberately logged e-mail
        logging.getLogger("tests.privacy.control").debug("deliberate leak: %s", persons[0].email)
    finally:
        if edge is not None:
            edge.stop()
        hub.stop()
    sources["test process log (edge, simulator, clients)"] = debug_log.read_text("utf-8")
    sources["hub log"] = (hubdir / "hub.log").read_text("utf-8", errors="replace")

    hits = find_leaks(sources, wanted)
    control = [h for h in hits if "deliberate leak" in h[2]]
    leaks = [h for h in hits if "deliberate leak" not in h[2]]
    assert leaks == [], f"{len(leaks)} leaks, first ones: {leaks[:5]}"
    assert [kind for _, kind, _ in control] == ["email", "email_local_part"][:len(control)]
    assert control and control[0][1] in ("email", "email_local_part")

    # The proof is only worth something if the data flowed and the logs were verbose.
    names = {p.first_name for p in persons}
    shown = {c.payload.get("display_name") for c in cards if isinstance(c.payload, dict)}
    assert len(shown & names) >= 3, "staff cards should carry some first names (consent)"
    process_log = sources["test process log (edge, simulator, clients)"]
    hub_log = sources["hub log"]
    assert process_log.count(" DEBUG ") > 100 and " DEBUG " in hub_log
    assert "CRM import" in hub_log and "erased member" in hub_log  # the paths with PII ran
    assert "reason=bad_json" in process_log  # the malformed check-in was logged (its shape)
    assert summary["checkin"] >= 15 and summary["pos"] >= 50, summary
    # the hub's metrics saw the day too (so searching them means something)
    hub_text = sources["hub /metrics"]
    assert 'storeside_hub_events_total{outcome="accepted",store="demo-001"}' in hub_text
    assert 'storeside_hub_checkin_tokens_total{outcome="issued"}' in hub_text
    assert 'route="/v1/members/{subject}/consent"' in hub_text
    print(f"privacy day: {len(wanted)} needles, {sum(len(s) for s in sources.values())} chars "
          f"searched in {len(sources)} sources, events {dict(summary)}")


def play_day(broker: PrivateBroker, topics: Any, hub: HubProcess, population: Any) -> Any:
    """The simulator plays the whole day; check-in tokens come from the hub's app API."""
    app = hub.app_backend()

    def mint(subject: str, scopes: tuple[str, ...], now: float) -> str:
        answer = app.post("/v1/tokens/checkin",
                          json={"subject": subject, "store": STORE, "scopes": list(scopes)})
        answer.raise_for_status()
        return str(answer.json()["token"])

    probe = MqttProbe(broker.host, broker.port, [f"{topics.prefix}/app/+/offers"])
    sim = Simulator(probe, topics, mint, SPEED, run="pv")
    probe.on_receive = sim.on_offer
    probe.start()
    try:
        sim.run_events(plan_day(population, seed=SEED, day=0))
    finally:
        probe.stop()
    return sim.counts


def unhappy_paths(hub: HubProcess, edge: EmbeddedEdge, watch: MqttProbe, topics: Any,
                  persons: list[Person]) -> None:
    """Personal data where it does not belong (malformed app and till messages), a consent
    change and an erasure, each seen through to its end."""
    ana, ben, cleo = persons[0], persons[1], persons[2]
    watch.publish(topics.app(ana.subject, "checkin"),
                  f'{{"v": 1, "event_id": "bad-1", "email": "{ana.email}", "name": "'.encode())
    watch.publish(topics.pos, {"v": 1, "event_id": "bad-2", "ts": time.time(),
                               "basket_id": "b-bad", "subject": None,
                               "loyalty_number": ben.loyalty_number,
                               "lines": [{"product_id": "sku-10001", "quantity": 1}]})
    watch.publish(topics.app(cleo.subject, "feedback"),
                  {"v": 1, "event_id": "bad-3", "ts": time.time(), "product_id": cleo.email,
                   "action": f"{cleo.first_name} {cleo.last_name}", "birthday":
                   cleo.birthday.isoformat()})
    watch.wait_for(lambda r: r.topic == topics.dead_letters and "bad-3" in json.dumps(r.payload),
                   15)
    answer = hub.app_backend().put(f"/v1/members/{ben.subject}/consent",
                                   json={"consent": {"staff_display": False}, "channel": "app"})
    assert answer.status_code == 200, answer.text
    erasure = hub.admin().delete(f"/v1/members/{cleo.subject}")
    erasure.raise_for_status()
    erasure_id = erasure.json()["erasure_id"]
    wait_until(lambda: hub.admin().get(f"/v1/erasures/{erasure_id}").json()["complete"], 30, 0.1)
