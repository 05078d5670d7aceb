"""The people of the privacy proof (tests/test_privacy_logs.py) and the search for them.

A made-up CRM: the demo store's members (``edge.demo_store``, so the simulator's plan knows
their habits) given real-looking first and last names, e-mail addresses, birthdays and
loyalty numbers. The subject every part of Storeside sees is the HMAC of the loyalty number
(``models.identity``), exactly as the hub derives it when it imports the CSV.

``needles`` lists what must never appear in a log line, a metric, a status or dead-letter
message: every first name, last name, full name, e-mail and its local part, birthday (ISO,
day/month and month/day, German dotted) and loyalty number. Precise on purpose: a needle
shorter than 4 characters or that is also a word of the catalog (product names, brands,
categories, zones) is left out, so a hit is a leak, never a coincidence.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date

from edge.demo_store import DemoMember, DemoPopulation
from models.identity import pseudonymous_id

FIRST_NAMES = (
    "Annelise", "Bartholomew", "Cordelia", "Desmond", "Evangeline", "Fitzwilliam",
    "Gwendolyn", "Horatio", "Isolde", "Jedediah", "Katarzyna", "Leopoldine", "Maximilian",
    "Nerissa", "Octavian", "Philippa", "Quentin", "Rosalind", "Sebastiano", "Theodora",
    "Ulrika", "Valentijn", "Wilhelmina", "Xaviera", "Yevgenia", "Zacharias", "Anneliese",
    "Bronislava", "Cornelius", "Dagmara",
)
LAST_NAMES = (
    "Okonkwo", "Vasquez-Lindqvist", "Thorvaldsen", "Abernathy", "Kowalczyk", "Fairweather",
    "Montgomery", "Nakashima", "Oyelaran", "Pemberton", "Quisenberry", "Rasmussen",
    "Szczepanski", "Tremblay", "Underhill", "Vanderbilt", "Wojciechowski", "Yamaguchi",
    "Zeitlinger", "Achterberg",
)
MIN_NEEDLE = 4


@dataclass(frozen=True)
class Person:
    """One CRM row; ``member`` is the demo member it stands for (subject re-derived)."""

    member: DemoMember
    loyalty_number: str
    first_name: str
    last_name: str
    email: str
    birthday: date

    @property
    def subject(self) -> str:
        return self.member.subject


def people(population: DemoPopulation, salt: str, seed: int = 11) -> tuple[DemoPopulation,
                                                                          list[Person]]:
    """The population with subjects derived from the new loyalty numbers, and its people."""
    rng = random.Random(seed)
    out: list[Person] = []
    used: set[tuple[str, str]] = set()
    for member in population.members:
        while True:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            if (first, last) not in used:
                used.add((first, last))
                break
        loyalty = f"LC-{rng.randrange(10**9, 10**10)}"
        birthday = date(rng.randint(1950, 2004), rng.randint(1, 12), rng.randint(13, 28))
        email = f"{first.lower()}.{last.lower()}{rng.randint(10, 99)}@mailbox-example.org"
        out.append(Person(replace(member, subject=pseudonymous_id(loyalty, salt),
                                  first_name=first),
                          loyalty, first, last, email, birthday))
    members = tuple(p.member for p in out)
    return DemoPopulation(population.seed, population.products, members), out


def crm_csv(persons: Iterable[Person], home_store: str) -> str:
    """The CRM export the hub imports (``hub.members_csv`` columns)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["loyalty_number", "first_name", "last_name", "email", "birthday", "tier",
                     "home_store", "sizes", "brands", "consent_personalize",
                     "consent_staff_display", "consent_app_offers"])
    for p in persons:
        consent = p.member.consent
        sizes = ";".join(f"{c}={s}" for c, s in sorted(p.member.sizes.items()))
        writer.writerow([p.loyalty_number, p.first_name, p.last_name, p.email,
                         p.birthday.isoformat(), "gold", home_store, sizes, "",
                         *("yes" if consent.get(k) else "no"
                           for k in ("personalize", "staff_display", "app_offers"))])
    return buffer.getvalue()


def needles(persons: Iterable[Person], vocabulary: str) -> dict[str, str]:
    """``{needle (lower case): what it is}``; ``vocabulary`` is the catalog's own text."""
    words = vocabulary.lower()
    found: dict[str, str] = {}
    for p in persons:
        b = p.birthday
        candidates = {
            p.first_name: "first_name", p.last_name: "last_name",
            f"{p.first_name} {p.last_name}": "full_name", p.email: "email",
            p.email.split("@")[0]: "email_local_part", b.isoformat(): "birthday",
            f"{b.day:02d}/{b.month:02d}": "birthday_day_month",
            f"{b.month:02d}/{b.day:02d}": "birthday_month_day",
            f"{b.day:02d}.{b.month:02d}.{b.year}": "birthday_dotted",
            p.loyalty_number: "loyalty_number",
        }
        for text, kind in candidates.items():
            needle = text.lower()
            if len(needle) >= MIN_NEEDLE and needle not in words:
                found[needle] = kind
    return found


def find_leaks(sources: dict[str, str], wanted: dict[str, str]) -> list[tuple[str, str, str]]:
    """Every (source, kind, line) where a needle occurs, case-insensitively. One regex over
    all needles, so a few MB of DEBUG logs are searched in well under a second."""
    pattern = re.compile("|".join(re.escape(n) for n in sorted(wanted, key=len, reverse=True)),
                         re.IGNORECASE)
    hits = []
    for name, text in sources.items():
        for line in text.splitlines():
            for match in pattern.finditer(line):
                hits.append((name, wanted[match.group(0).lower()], line[:300]))
    return hits
