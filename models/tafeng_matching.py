"""Recover the reality-check ids (json user / item ids) on the raw Ta-Feng rows.

Why matching and not a rule: the reality-check json files are TIFU-KNN's preprocessed
Ta-Feng (``HaojiHu/TIFUKNN`` data, users with 2..50 history baskets kept). Its user ids,
item ids, basket order and even the choice of the target basket follow the row order of
the *original* monthly files, which the merged raw file we have does not preserve (rows
of one month are not sorted by day, and the merge reordered them). Its item set (11,997
products) is roughly "the ~12,000 most frequent products among customers with >= 3
baskets" with ties broken by that lost order. So no rule applied to our file gives the
same users, items and targets; the published numbers can only be compared on the same
users if we find, for every json user, the raw customer and, for every json item, the raw
product. The json keeps enough structure to do that exactly:

1. ``decode``: walk the json users in id order. Products already identified narrow the
   candidate customers; each candidate's days are aligned to the json baskets (a basket
   is a subset of its day's products), and the intersection of a json item's aligned days
   narrows its candidate products until one is left.
2. ``match_users``: with the item map, a customer's days restricted to the mapped
   products must equal the json user's baskets exactly: match on that signature.
3. ``refine_items``: re-vote every item over the exactly aligned baskets and repeat 2.

Pure: works on plain dicts; no I/O.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from models.assignment import INFEASIBLE, min_cost_assignment

logger = logging.getLogger(__name__)

# customer -> sorted [(day timestamp, products bought that day)]
Days = Mapping[str, Sequence[tuple[float, frozenset[str]]]]
# json user id -> baskets (history in json order, then the target basket last)
JsonBaskets = Mapping[str, Sequence[tuple[int, ...]]]

@dataclass
class Matching:
    """The recovered id maps and, per json user, the raw day of each json basket."""

    users: dict[str, str] = field(default_factory=dict)  # json user -> customer
    items: dict[int, str] = field(default_factory=dict)  # json item -> product
    days: dict[str, list[float]] = field(default_factory=dict)  # json user -> day per basket
    # json user -> {json item -> product} where that user's *target* item id stands for
    # another product (see ``target_aliases``)
    aliases: dict[str, dict[int, str]] = field(default_factory=dict)


class _Decoder:
    """State of pass 1: confirmed items, candidate products, customers already taken."""

    def __init__(self, days: Days) -> None:
        self.days = days
        self.by_product: dict[str, set[str]] = defaultdict(set)
        for customer, customer_days in days.items():
            for _, products in customer_days:
                for product in products:
                    self.by_product[product].add(customer)
        self.confirmed: dict[int, str] = {}
        self.owner: dict[str, int] = {}  # product -> json item
        self.candidates: dict[int, set[str]] = {}
        self.used: set[str] = set()

    def _edge_ok(self, basket: tuple[int, ...], products: frozenset[str]) -> bool:
        if len(basket) > len(products):
            return False
        for item in basket:
            known = self.confirmed.get(item)
            if known is not None:
                if known not in products:
                    return False
            else:
                cand = self.candidates.get(item)
                if cand is not None and cand.isdisjoint(products):
                    return False
        return True

    def align(self, baskets: Sequence[tuple[int, ...]], customer: str) -> list[int] | None:
        """Day index per basket: near the diagonal (json order is almost by date)."""
        customer_days = self.days[customer]
        cost = [
            [
                abs(k - i) + 0.1 * (len(products) - len(basket))
                if self._edge_ok(basket, products)
                else INFEASIBLE
                for k, (_, products) in enumerate(customer_days)
            ]
            for i, basket in enumerate(baskets)
        ]
        return min_cost_assignment(cost)

    def _consistent(
        self, baskets: Sequence[tuple[int, ...]], customer: str, aligned: list[int]
    ) -> dict[int, set[str]] | None:
        """Candidate products per unconfirmed item under this alignment (None: impossible)."""
        customer_days = self.days[customer]
        out: dict[int, set[str]] = {}
        for basket, k in zip(baskets, aligned, strict=True):
            products = customer_days[k][1]
            for item in basket:
                if item in self.confirmed:
                    continue
                if item in out:
                    out[item] &= products
                elif item in self.candidates:
                    out[item] = self.candidates[item] & products
                else:
                    out[item] = {p for p in products if p not in self.owner}
                if not out[item]:
                    return None
        return out

    def _candidate_customers(self, baskets: Sequence[tuple[int, ...]]) -> list[str]:
        n = len(baskets)
        known = sorted(
            {self.confirmed[x] for b in baskets for x in b if x in self.confirmed},
            key=lambda p: len(self.by_product[p]),
        )
        if known:
            pool = set(self.by_product[known[0]])
            for product in known[1:]:
                pool &= self.by_product[product]
                if len(pool) <= 1:
                    break
        else:
            sizes = sorted((len(b) for b in baskets), reverse=True)
            pool = set()
            for customer, customer_days in self.days.items():
                if len(customer_days) < n:
                    continue
                day_sizes = sorted((len(p) for _, p in customer_days), reverse=True)
                if all(a <= b for a, b in zip(sizes, day_sizes, strict=False)):
                    pool.add(customer)
        return sorted(c for c in pool if c not in self.used and len(self.days[c]) >= n)

    def confirm(self, item: int, product: str) -> None:
        stack = [(item, product)]
        while stack:
            item, product = stack.pop()
            if item in self.confirmed or product in self.owner:
                continue
            self.confirmed[item] = product
            self.owner[product] = item
            self.candidates.pop(item, None)
            for other, cand in self.candidates.items():
                if product in cand:
                    cand.discard(product)
                    if len(cand) == 1:
                        stack.append((other, next(iter(cand))))

    def step(self, baskets: Sequence[tuple[int, ...]]) -> tuple[str, list[int]] | None:
        best: tuple[tuple[int, int, str], list[int], dict[int, set[str]]] | None = None
        for customer in self._candidate_customers(baskets):
            aligned = self.align(baskets, customer)
            if aligned is None:
                continue
            narrowed = self._consistent(baskets, customer, aligned)
            if narrowed is None:
                continue
            customer_days = self.days[customer]
            slack = sum(
                len(customer_days[k][1]) - len(b) for b, k in zip(baskets, aligned, strict=True)
            )
            key = (len(customer_days) - len(baskets), slack, customer)
            if best is None or key < best[0]:
                best = (key, aligned, narrowed)
        if best is None:
            return None
        (_, _, customer), aligned, narrowed = best
        self.used.add(customer)
        self.candidates.update(narrowed)
        for item, cand in narrowed.items():
            if len(cand) == 1 and item in self.candidates:
                self.confirm(item, next(iter(cand)))
        return customer, aligned


def decode(days: Days, baskets: JsonBaskets) -> dict[int, str]:
    """Pass 1: a first item map (mostly right; later passes repair the rest)."""
    decoder = _Decoder(days)
    failed = 0
    for user in sorted(baskets, key=int):
        if decoder.step(baskets[user]) is None:
            failed += 1
    logger.info("decode: %d items identified, %d users not placed", len(decoder.confirmed), failed)
    return dict(decoder.confirmed)


def _signature(baskets: Sequence[frozenset[str]]) -> tuple[tuple[str, ...], ...]:
    """Order-free, multiplicity-keeping key of a user's baskets."""
    return tuple(sorted(tuple(sorted(b)) for b in baskets))


def match_users(
    days: Days, baskets: JsonBaskets, items: Mapping[int, str]
) -> tuple[dict[str, str], dict[str, list[float]]]:
    """Pass 2: json user -> customer whose days, restricted to the mapped items, are its baskets.

    Exact signature first; users left over take the unused customer sharing most of their
    (basket, day) pairs, so one wrong item cannot lose a user.
    """
    kept = set(items.values())
    restricted: dict[str, dict[frozenset[str], list[float]]] = {}
    by_signature: dict[tuple[tuple[str, ...], ...], list[str]] = defaultdict(list)
    by_product: dict[str, set[str]] = defaultdict(set)
    for customer, customer_days in days.items():
        per_set: dict[frozenset[str], list[float]] = defaultdict(list)
        for day, products in customer_days:
            kept_products = products & kept
            if kept_products:
                per_set[frozenset(kept_products)].append(day)
                for product in kept_products:
                    by_product[product].add(customer)
        restricted[customer] = per_set
        by_signature[_signature([s for s, ds in per_set.items() for _ in ds])].append(customer)
    users: dict[str, str] = {}
    used: set[str] = set()
    pending: list[str] = []
    mapped = {
        user: [frozenset(items[x] for x in b if x in items) for b in user_baskets]
        for user, user_baskets in baskets.items()
    }
    for user in sorted(baskets, key=int):
        options = [c for c in by_signature.get(_signature(mapped[user]), []) if c not in used]
        if options:
            users[user] = options[0]
            used.add(options[0])
        else:
            pending.append(user)
    for user in pending:
        votes: Counter[str] = Counter()
        for product in {p for b in mapped[user] for p in b}:
            votes.update(c for c in by_product[product] if c not in used)
        if not votes:
            continue
        user_baskets = mapped[user]

        def rank(
            c: str, bs: list[frozenset[str]] = user_baskets, vs: Counter[str] = votes
        ) -> tuple[int, int, int, str]:
            return (
                sum(b in restricted[c] for b in bs),
                vs[c],
                -abs(len(restricted[c]) - len(bs)),
                c,
            )

        best = max((c for c, _ in votes.most_common(20)), key=rank)
        users[user] = best
        used.add(best)
    aligned = {user: _align_days(mapped[user], days[c], kept) for user, c in users.items()}
    return users, aligned


def _align_days(
    baskets: Sequence[frozenset[str]], customer_days: Sequence[tuple[float, frozenset[str]]],
    kept: set[str],
) -> list[float]:
    """Day per basket: equal restricted set first, else largest overlap (days not reused)."""
    restricted = [(day, products & kept) for day, products in customer_days]
    taken: set[float] = set()
    out: list[float] = [0.0] * len(baskets)
    order = sorted(range(len(baskets)), key=lambda i: -len(baskets[i]))
    for i in order:
        basket = baskets[i]
        best = max(
            (d for d in restricted if d[0] not in taken),
            key=lambda d: (d[1] == basket, len(d[1] & basket), -len(d[1] ^ basket), -d[0]),
            default=None,
        )
        if best is None:
            continue
        out[i] = best[0]
        taken.add(best[0])
    return out


def refine_items(
    days: Days, baskets: JsonBaskets, users: Mapping[str, str],
    aligned: Mapping[str, list[float]], items: Mapping[int, str],
) -> dict[int, str]:
    """Pass 3: each item takes the product present on most of its aligned days (one-to-one).

    Items whose current product is on every aligned day keep it; only the others (a few
    dozen) are re-voted over all products of their days, which keeps this pass cheap.
    """
    occurrences: list[tuple[int, frozenset[str]]] = []
    support: Counter[int] = Counter()
    total: Counter[int] = Counter()
    for user, customer in users.items():
        day_products = dict(days[customer])
        for basket, day in zip(baskets[user], aligned[user], strict=True):
            products = day_products.get(day, frozenset())
            for item in basket:
                occurrences.append((item, products))
                total[item] += 1
                support[item] += items.get(item) in products
    out = {x: items[x] for x in total if x in items and support[x] == total[x]}
    owner = {p: x for x, p in out.items()}
    votes: dict[int, Counter[str]] = {x: Counter() for x in total if x not in out}
    for item, products in occurrences:
        if item in votes:
            votes[item].update(products)
    ranked = sorted(
        votes, key=lambda x: (-votes[x].most_common(1)[0][1] if votes[x] else 0, x)
    )
    for item in ranked:
        top = votes[item].most_common()
        if not top:
            continue
        best_count = top[0][1]
        choices = [p for p, n in top if n == best_count and p not in owner]
        current = items.get(item)
        if current in choices:
            choice = current
        elif choices:
            choice = sorted(choices)[0]
        else:
            free = [p for p, _ in top if p not in owner]
            if not free:
                continue
            choice = free[0]
        out[item] = choice
        owner[choice] = item
    changed = sum(out.get(x) != items.get(x) for x in set(out) | set(items))
    logger.info("refine: %d item(s) changed", changed)
    return out


def target_aliases(
    days: Days, baskets: JsonBaskets, users: Mapping[str, str],
    aligned: Mapping[str, list[float]], items: Mapping[int, str],
) -> dict[str, dict[int, str]]:
    """Target item ids that stand for a product never seen in any history.

    TIFU-KNN's item dictionary had 12,000 products; 3 of them occur only in target
    baskets, and the reality-check json writes them with the ids 0, 1, 2 of unrelated
    products. We keep the true product: each such occurrence takes the unkept product of
    that day voted most often for that id.
    """
    kept = set(items.values())
    votes: dict[int, Counter[str]] = defaultdict(Counter)
    misses: list[tuple[str, int, frozenset[str]]] = []
    for user, customer in users.items():
        products = dict(days[customer]).get(aligned[user][-1], frozenset())
        for item in baskets[user][-1]:
            if items.get(item) not in products:
                unkept = frozenset(products - kept)
                votes[item].update(unkept)
                misses.append((user, item, unkept))
    out: dict[str, dict[int, str]] = defaultdict(dict)
    for user, item, unkept in misses:
        if unkept:
            counts = votes[item]
            out[user][item] = max(sorted(unkept), key=counts.__getitem__)
    return dict(out)


def recover(days: Days, baskets: JsonBaskets, rounds: int = 2) -> Matching:
    """Run the three passes; ``rounds`` repeats of (users, items) converge in practice."""
    items = decode(days, baskets)
    users, aligned = match_users(days, baskets, items)
    for _ in range(rounds):
        new_items = refine_items(days, baskets, users, aligned, items)
        if new_items == items:
            break
        items = new_items
        users, aligned = match_users(days, baskets, items)
    aliases = target_aliases(days, baskets, users, aligned, items)
    return Matching(users=users, items=items, days=aligned, aliases=aliases)
