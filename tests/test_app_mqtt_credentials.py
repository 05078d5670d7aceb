"""Apps get their store-broker credentials from the hub (hub.mqtt_credentials): the store
secret derivation, the check-in token's ``mqtt`` field, the announce it makes, the hub's
seed commands, and the cheap rebuild of the password file (edge.mqtt_passwords,
``storeside-edge mqtt-passwd --trigger-file``). The whole flow on a real broker:
tests/test_app_mqtt_e2e.py."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.mqtt_cli import main as edge_cli
from edge.mqtt_cli import member_subjects
from edge.mqtt_passwords import app_password, password_file, store_secret, verify_line
from edge.store import EdgeStore
from hub.cli import main as hub_cli
from hub.devtools import EmbeddedHub, hub_settings, prepare_hub
from tests.hub_env import Clock, csv_text, member_row, subject, write_config

SEED = b"chain-seed-0123456789abcdef-0123"
SERVICES = {"_storeside-edge": "edge-password-0123456789"}


def test_store_secret_is_per_store_and_per_seed() -> None:
    s1, s2 = store_secret(SEED, "s1"), store_secret(SEED, "s2")
    assert s1 == store_secret(SEED, "s1") and s1 != s2
    assert s1 != store_secret(SEED + b"x", "s1")
    assert len(s1) == 43 and s1.decode("ascii")  # what a generated secret file holds
    member = subject(1)
    assert app_password(s1, member) != app_password(s2, member)
    with pytest.raises(ValueError, match="store id"):
        store_secret(SEED, "S 1")
    with pytest.raises(ValueError, match="at least"):
        store_secret(b"short", "s1")


def test_rebuild_keeps_valid_lines_and_redoes_the_rest() -> None:
    secret, subjects = store_secret(SEED, "s1"), [subject(i) for i in range(5)]
    fresh, apps = password_file(secret, SERVICES, subjects)
    assert apps == 5 and password_file(secret, SERVICES, subjects, fresh)[0] == fresh
    # a line whose salt is the derived one is kept as it is (no PBKDF2: proof by a
    # digest that would not verify), any other is computed again
    lines = dict(line.split(":", 1) for line in fresh.splitlines())
    kept = lines[subjects[0]].rsplit("$", 1)[0] + "$not-a-digest"
    stale = "$7$101$AAAAAAAAAAAAAAAA$bm8="
    previous = "".join(f"{u}:{h}\n" for u, h in
                       {**lines, subjects[0]: kept, subjects[1]: stale}.items())
    text = password_file(secret, SERVICES, subjects, previous)[0]
    again = dict(line.split(":", 1) for line in text.splitlines())
    assert again[subjects[0]] == kept and again[subjects[1]] == lines[subjects[1]]
    # a new secret: every app line is made again and verifies with the new password
    other = store_secret(SEED, "s2")
    rotated = password_file(other, SERVICES, subjects, fresh)[0]
    line = next(x for x in rotated.splitlines() if x.startswith(subjects[2]))
    assert verify_line(line, app_password(other, subjects[2]))
    assert not verify_line(line, app_password(secret, subjects[2]))


def test_mqtt_passwd_rebuilds_again_when_the_trigger_moves_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The edge commits a page and writes the trigger while a rebuild runs (after it read
    the members): that rebuild goes round once more instead of leaving the new member to
    the timer."""
    db, trigger, out = tmp_path / "edge.db", tmp_path / "members.changed", tmp_path / "passwd"
    EdgeStore(db).close()
    secret_file, services = tmp_path / "secret", tmp_path / "mqtt"
    secret_file.write_bytes(store_secret(SEED, "s1") + b"\n")
    services.mkdir()
    (services / "_storeside-edge.password").write_text(SERVICES["_storeside-edge"])
    late = subject(99)
    reads: list[list[str]] = []

    def read_then_edge_adds_one(path: Path) -> list[str]:
        found = member_subjects(path)
        reads.append(found)
        if len(reads) == 1:  # the edge's page lands right after this read
            with sqlite3.connect(db) as conn:
                conn.execute("INSERT INTO profiles(subject, consent, preferences, updated_at) "
                             "VALUES (?, '{}', '{}', 0)", (late,))
            trigger.write_text("1.0 1\n")
        return found

    monkeypatch.setattr("edge.mqtt_cli.member_subjects", read_then_edge_adds_one)
    args = ["mqtt-passwd", "--secret-file", str(secret_file), "--services-dir", str(services),
            "--db", str(db), "--out", str(out), "--trigger-file", str(trigger)]
    assert edge_cli(args) == 0
    assert json.loads(capsys.readouterr().out) == {
        "services": ["_storeside-edge"], "apps": 1, "changed": True}
    assert reads == [[], [late]]
    assert any(line.startswith(f"{late}:") for line in out.read_text().splitlines())
    assert edge_cli(args) == 0 and len(reads) == 3  # nothing moved: one round
    assert json.loads(capsys.readouterr().out)["changed"] is False


# ---------------------------------------------------------------------- hub


def _hub(tmp_path: Path, **mqtt: Any) -> EmbeddedHub:
    settings = hub_settings(tmp_path, mqtt=mqtt)
    return EmbeddedHub(tmp_path, stores=("s1", "s2"), settings=settings, clock=Clock())


@pytest.fixture()
def seeded(tmp_path: Path) -> Iterator[EmbeddedHub]:
    seed = tmp_path / "mqtt.seed"
    seed.write_bytes(SEED + b"\n")
    with _hub(tmp_path, seed_file=seed) as hub:
        hub.admin().post("/v1/members/import", content=csv_text(
            member_row(1, home="s1"), member_row(2, home="s1", consent="no,yes,yes")
        )).raise_for_status()
        yield hub


def _token(hub: EmbeddedHub, member: str, store: str) -> Any:
    return hub.app_backend().post("/v1/tokens/checkin", json={"subject": member,
                                                                  "store": store})


def _feed(hub: EmbeddedHub, store: str) -> dict[str, str]:
    answer = hub.store(store).get(f"/v1/stores/{store}/feed/profiles")
    answer.raise_for_status()
    return {item["subject"]: item["op"] for item in answer.json()["items"]}


def test_token_carries_the_store_scoped_mqtt_login(seeded: EmbeddedHub) -> None:
    member = subject(1)
    answers = {store: _token(seeded, member, store) for store in ("s1", "s2")}
    for store, answer in answers.items():
        assert answer.status_code == 200, answer.text
        assert answer.json()["mqtt"] == {
            "username": member, "password": app_password(store_secret(SEED, store), member)}
    assert answers["s1"].json()["mqtt"] != answers["s2"].json()["mqtt"]


def test_token_announces_the_member_at_that_store(seeded: EmbeddedHub) -> None:
    """Member 1 lives at s1: s2's feed does not carry them until a token for s2 is issued.
    Member 2 withheld 'personalize': s2 is told to hold nothing of them."""
    assert subject(1) not in _feed(seeded, "s2")
    assert _token(seeded, subject(1), "s2").status_code == 200
    assert _feed(seeded, "s2")[subject(1)] == "upsert"
    assert _token(seeded, subject(2), "s2").status_code == 200
    assert _feed(seeded, "s2").get(subject(2), "delete") == "delete"


def test_no_seed_no_mqtt_field_and_a_lost_seed_is_a_503(tmp_path: Path) -> None:
    with _hub(tmp_path / "a") as hub:
        hub.admin().post("/v1/members/import", content=csv_text(member_row(1)))
        answer = _token(hub, subject(1), "s1")
        assert answer.status_code == 200 and "mqtt" not in answer.json()
    with _hub(tmp_path / "b", seed_file=tmp_path / "missing.seed") as hub:
        hub.admin().post("/v1/members/import", content=csv_text(member_row(1)))
        answer = _token(hub, subject(1), "s1")
        assert (answer.status_code, answer.json()["detail"]["reason"]) == (503, "no_mqtt_seed")


def test_seed_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = tmp_path / "secrets" / "mqtt.seed"
    settings, _, _ = hub_settings(tmp_path, mqtt={"seed_file": seed})
    config = write_config(tmp_path / "hub.toml", settings)
    prepare_hub(settings, ("s1",))  # init + add-store
    assert hub_cli(["mqtt-seed-init", "--config", str(config)]) == 0
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    assert str(seed) in capsys.readouterr().out
    first = seed.read_bytes()
    assert hub_cli(["mqtt-seed-init", "--config", str(config)]) == 2  # never overwritten
    assert seed.read_bytes() == first and "refusing" in capsys.readouterr().err
    assert hub_cli(["store-mqtt-secret", "--config", str(config), "s1"]) == 0
    assert capsys.readouterr().out.strip().encode() == store_secret(first.strip(), "s1")
    assert hub_cli(["store-mqtt-secret", "--config", str(config), "s9"]) == 2
    assert "unknown store" in capsys.readouterr().err
