"""Hub members: CRM CSV import (endpoint + CLI), consent history and API roles, DSR."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.cli import main
from hub.devtools import EmbeddedHub, hub_settings
from hub.members_csv import parse_members_csv
from tests.hub_env import Clock, basket, csv_text, member_row, subject, write_config


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    with EmbeddedHub(tmp_path, stores=("s1", "s2"), clock=Clock()) as running:
        yield running


def _import(hub: EmbeddedHub, text: str) -> dict:
    r = hub.admin().post("/v1/members/import", content=text,
                         headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    return r.json()


def test_csv_parser_reports_bad_rows_with_line_numbers() -> None:
    text = csv_text(
        member_row(1),
        "2,Ben,,,1985-13-01,silver,s2,,,1,1,1",          # line 3: bad birthday
        "3,Cy,,not-an-email,,,s1,,,yes,no,no",           # line 4: bad email
        '4,"Multi\nline",,,,,s1,,,maybe,no,no',          # lines 5-6: bad consent word
        "5,Eve,,,,,S 1,,,yes,yes,yes",                   # line 7: bad home store
        ",NoNumber,,,,,s1,,,yes,yes,yes",                # line 8: no loyalty number
        "6,Fay,,,,,s1,drinks,,yes,yes,yes",              # line 9: sizes without '='
        "7,Gus,,,,,s1,,,yes,yes,yes,extra",              # line 10: extra field
        member_row(8),
    )
    result = parse_members_csv(text)
    assert [r.loyalty_number for r in result.records] == ["1", "8"]
    assert [(e["line"], e["reason"]) for e in result.errors] == [
        (3, "bad_birthday"), (4, "bad_email"), (5, "bad_consent"), (7, "bad_home_store"),
        (8, "bad_loyalty_number"), (9, "bad_sizes"), (10, "extra_fields"),
    ]
    first = result.records[0]
    assert first.preferences == {"sizes": {"dairy": "large"}, "brands": ["Sunvale", "Crispo"]}
    assert first.consent == {"personalize": True, "staff_display": True, "app_offers": True}
    bad_header = parse_members_csv("number,name\n1,x\n")
    assert bad_header.errors[0]["reason"] == "bad_header" and not bad_header.records


def test_import_endpoint_upserts_and_reports_bad_rows(hub: EmbeddedHub) -> None:
    report = _import(hub, csv_text(member_row(1), "2,Ben,,,1985-13-01,,s2,,,1,1,1",
                                   member_row(3, home="s2")))
    assert (report["created"], report["updated"]) == (2, 0)
    assert report["errors"] == [{"line": 3, "reason": "bad_birthday",
                                 "detail": "birthday must be YYYY-MM-DD, got '1985-13-01'"}]
    again = _import(hub, csv_text(member_row(1, first_name="Anna")))
    assert (again["created"], again["updated"]) == (0, 1)
    export = hub.admin().get(f"/v1/members/{subject(1)}/export").json()
    assert export["profile"]["first_name"] == "Anna"
    assert "loyalty_number" not in json.dumps(export)  # only the pseudonym is kept
    # only the admin may import
    assert hub.app_backend().post("/v1/members/import", content="x").status_code == 403
    assert hub.client().post("/v1/members/import", content="x").status_code == 401


def test_import_cli_reads_a_file_and_exits_1_on_bad_rows(tmp_path: Path, capsys) -> None:
    settings, _, _ = hub_settings(tmp_path)
    config = write_config(tmp_path / "hub.toml", settings)
    csv_file = tmp_path / "crm.csv"
    csv_file.write_text(csv_text(member_row(1), "2,,,,,,,,,perhaps,,"))
    assert main(["init", "--config", str(config)]) == 0
    assert main(["import-members", "--config", str(config), "--csv", str(csv_file)]) == 1
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert report["created"] == 1
    assert report["errors"] == [{"line": 3, "reason": "bad_consent",
                                 "detail": "consent_personalize must be true/false, got 'perhaps'"}]
    assert main(["import-members", "--config", str(config), "--csv",
                 str(tmp_path / "missing.csv")]) == 2


def test_consent_history_and_roles(hub: EmbeddedHub) -> None:
    _import(hub, csv_text(member_row(1, consent="yes,no,yes")))
    s = subject(1)
    url = f"/v1/members/{s}/consent"
    hub.context.clock.advance(60)
    r = hub.app_backend().put(url, json={"consent": {"staff_display": True, "app_offers": False}})
    assert r.status_code == 200
    assert r.json()["consent"] == {"personalize": True, "staff_display": True,
                                   "app_offers": False}
    hub.context.clock.advance(60)
    r = hub.admin().put(url, json={"consent": {"app_offers": True}, "channel": "app"})
    assert r.status_code == 200
    # unchanged values do not enter the history
    assert hub.app_backend().put(url, json={"consent": {"app_offers": True},
                                            "channel": "store"}).status_code == 200
    history = hub.app_backend().get(url).json()["history"]
    assert [(h["purpose"], h["granted"], h["channel"]) for h in history] == [
        ("personalize", True, "crm_import"), ("staff_display", False, "crm_import"),
        ("app_offers", True, "crm_import"), ("staff_display", True, "app"),
        ("app_offers", False, "app"), ("app_offers", True, "hub_admin"),
    ]
    assert history[3]["at"] == history[0]["at"] + 60
    # roles: a store key is authenticated but not allowed; no / bad token is 401
    assert hub.store("s1").put(url, json={"consent": {"app_offers": False}}).status_code == 403
    assert hub.client().put(url, json={"consent": {"app_offers": False}}).status_code == 401
    assert hub.client("nope").put(url, json={"consent": {}}).status_code == 401
    # bad input is a 4xx with a reason
    assert hub.app_backend().put(url, json={"consent": {"spam": True}}).status_code == 422
    r = hub.app_backend().put(f"/v1/members/{subject(99)}/consent",
                              json={"consent": {"personalize": False}})
    assert (r.status_code, r.json()["detail"]["reason"]) == (404, "unknown_member")
    assert hub.app_backend().get("/v1/members/not-a-subject/consent").status_code == 422


def test_crm_import_never_regrants_a_consent_revoked_in_the_app(hub: EmbeddedHub) -> None:
    _import(hub, csv_text(member_row(1)))
    s = subject(1)
    hub.app_backend().put(f"/v1/members/{s}/consent", json={"consent": {"personalize": False}})
    _import(hub, csv_text(member_row(1)))  # a stale export still says "yes"
    consent = hub.app_backend().get(f"/v1/members/{s}/consent").json()["consent"]
    assert consent["personalize"] is False
    # the CRM can still revoke
    _import(hub, csv_text(member_row(1, consent="no,no,yes")))
    assert hub.app_backend().get(f"/v1/members/{s}/consent").json()["consent"] == {
        "personalize": False, "staff_display": False, "app_offers": True}


def test_export_holds_everything_and_erasure_removes_it(hub: EmbeddedHub) -> None:
    _import(hub, csv_text(member_row(1), member_row(2)))
    s, other = subject(1), subject(2)
    ts = hub.context.clock.now
    events = [basket(s, ts), basket(s, ts + 1), basket(other, ts)]
    assert hub.store("s2").post("/v1/stores/s2/events",
                                json={"events": events}).status_code == 200
    export = hub.admin().get(f"/v1/members/{s}/export").json()
    assert export["profile"]["email"] == "a1@example.com"
    assert export["aggregates"]["baskets"] == 2
    assert len(export["purchases"]) == 4 and len(export["events"]) == 2
    assert export["visits"] == [{"store": "s2", "last_visit_ts": ts + 1, "announced_at": None}]
    assert len(export["consent_history"]) == 3 and export["erasure"] is None
    assert hub.app_backend().get(f"/v1/members/{s}/export").status_code == 403

    erased = hub.admin().delete(f"/v1/members/{s}").json()
    assert erased["created"] is True and erased["rows_deleted"] > 0
    assert hub.admin().delete(f"/v1/members/{s}").json()["erasure_id"] == erased["erasure_id"]
    after = hub.admin().get(f"/v1/members/{s}/export").json()
    assert after["profile"] is None and after["purchases"] == [] and after["events"] == []
    assert after["consent_history"] == [] and after["erasure"]["erasure_id"]
    # nothing of the member left in the file but the erasure record's pseudonym
    raw = Path(hub.settings.db_path).read_bytes()
    assert b"a1@example.com" not in raw and b"a2@example.com" in raw
    # the other member is untouched; the erased one cannot come back by import
    assert hub.admin().get(f"/v1/members/{other}/export").json()["aggregates"]["baskets"] == 1
    report = _import(hub, csv_text(member_row(1)))
    assert report["errors"][0]["reason"] == "erased" and report["created"] == 0
