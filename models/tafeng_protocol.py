"""The Ta-Feng reality-check protocol, rebuilt from the raw file (metadata kept).

Published NBR numbers on Ta-Feng (TIFU-KNN, "A Next Basket Recommendation Reality
Check") use one preprocessed split: 13,858 users, 11,997 items, 77,369 history baskets,
91,322 target rows, five fixed user folds (72/8/20). We rebuild exactly those users,
items and target baskets from ``ta_feng.csv.zip`` so every method also sees day, price,
category and area, and the fixed keysets apply unchanged.

The json ids cannot be re-derived by a rule (see ``models.tafeng_matching``: they follow
the lost row order of the original monthly files), so we recover them by matching the
json against the raw rows, verify the result basket by basket, and cache it keyed by the
input files' sha256.

Variants:
- default ("as published"): history = every other day of the customer with a kept product,
  i.e. exactly the json history. For 716 users (5.2%) the json target is not their latest
  day (the original files were not sorted by day), so their history has days *after* the
  target; we keep that to stay comparable with the published numbers.
- ``causal=True``: same users, items, targets and folds, history cut to days before the
  target (what a store would know). Use it for time-aware features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models.bundle import sha256_of
from models.nbr import Fold, NBRDataset, UserSequence
from models.tafeng_matching import Matching, recover
from models.transactions import Transaction, load_tafeng

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = "rc-1"  # bump when the build output changes (invalidates caches)
RAW_ZIP = Path("tafeng") / "ta_feng.csv.zip"
REALITY_CHECK_DIR = Path("tafeng_nbr_reality_check")
HISTORY_JSON = "tafeng_history.json"
FUTURE_JSON = "tafeng_future.json"
N_FOLDS = 5
MIN_DAYS = 3  # json users have >= 2 history baskets + the target

# SOURCE.md of the reality-check folder: what the rebuild must reproduce.
EXPECTED_COUNTS = {
    "users": 13_858,
    "items": 11_997,
    "history_baskets": 77_369,
    "target_rows": 91_322,
}


class ProtocolDataError(RuntimeError):
    """Input files missing or not the expected Ta-Feng / reality-check files."""


def default_data_dir() -> Path:
    """The shared data folder, a sibling of the repository checkout."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def default_cache_dir() -> Path:
    """``$STORESIDE_CACHE_DIR``, else ``$XDG_CACHE_HOME/storeside``, else ``~/.cache/storeside``."""
    explicit = os.environ.get("STORESIDE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "storeside"


@dataclass(frozen=True)
class RealityCheckIds:
    """Json (reality-check) ids <-> raw Ta-Feng ids, so results are on the same users."""

    customer_of_user: dict[str, str]  # json user id ("1".."13949") -> CUSTOMER_ID
    product_of_item: dict[int, str]  # json item id (0..11996) -> PRODUCT_ID
    # json user -> {json item in its target basket -> PRODUCT_ID}, for the 3 target-only
    # products the json writes with the ids of other items (see tafeng_matching)
    target_aliases: dict[str, dict[int, str]] = field(default_factory=dict)

    def user_of_customer(self) -> dict[str, str]:
        return {c: u for u, c in self.customer_of_user.items()}

    def item_of_product(self) -> dict[str, int]:
        return {p: i for i, p in self.product_of_item.items()}


@dataclass
class RealityCheck:
    """The dataset (users keyed by CUSTOMER_ID), the id maps and the verification figures."""

    dataset: NBRDataset
    ids: RealityCheckIds
    verification: dict[str, int | float]


def _inputs(data_dir: Path) -> list[Path]:
    folder = data_dir / REALITY_CHECK_DIR
    paths = [data_dir / RAW_ZIP, folder / HISTORY_JSON, folder / FUTURE_JSON]
    paths += [keyset_path(data_dir, k) for k in range(N_FOLDS)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ProtocolDataError(f"missing input file(s): {', '.join(missing)}")
    return paths


def keyset_path(data_dir: Path, fold: int) -> Path:
    return data_dir / REALITY_CHECK_DIR / "keyset" / f"tafeng_keyset_{fold}.json"


def read_json_baskets(data_dir: Path) -> dict[str, list[tuple[int, ...]]]:
    """Json user -> history baskets then the target basket (start/end markers dropped)."""
    folder = data_dir / REALITY_CHECK_DIR
    with open(folder / HISTORY_JSON, encoding="utf-8") as handle:
        history = json.load(handle)
    with open(folder / FUTURE_JSON, encoding="utf-8") as handle:
        future = json.load(handle)
    if set(history) != set(future):
        raise ProtocolDataError("history and future json do not have the same users")
    return {
        user: [tuple(b) for b in history[user][1:-1]] + [tuple(future[user][1])]
        for user in history
    }


def read_keysets(data_dir: Path) -> list[dict[str, list[str]]]:
    out = []
    for k in range(N_FOLDS):
        with open(keyset_path(data_dir, k), encoding="utf-8") as handle:
            keyset = json.load(handle)
        out.append({part: [str(u) for u in keyset[part]] for part in ("train", "val", "test")})
    return out


def _days_by_customer(
    rows: Sequence[Transaction],
) -> tuple[dict[str, list[Transaction]], dict[str, list[tuple[float, frozenset[str]]]]]:
    by_customer: dict[str, list[Transaction]] = defaultdict(list)
    for row in rows:
        by_customer[row.customer_id].append(row)
    days: dict[str, list[tuple[float, frozenset[str]]]] = {}
    for customer, customer_rows in by_customer.items():
        per_day: dict[float, set[str]] = defaultdict(set)
        for row in customer_rows:
            per_day[row.timestamp].add(row.product_id)
        if len(per_day) >= MIN_DAYS:
            days[customer] = sorted((d, frozenset(p)) for d, p in per_day.items())
    return by_customer, days


def _build(
    by_customer: Mapping[str, list[Transaction]],
    days: Mapping[str, list[tuple[float, frozenset[str]]]],
    baskets: Mapping[str, Sequence[tuple[int, ...]]],
    keysets: Sequence[Mapping[str, list[str]]],
    matching: Matching,
) -> RealityCheck:
    kept = frozenset(matching.items.values())
    users: dict[str, UserSequence] = {}
    target_equal = baskets_equal = not_last = 0
    for json_user, customer in matching.users.items():
        aliases = matching.aliases.get(json_user, {})
        target_day = matching.days[json_user][-1]
        day_products = dict(days[customer])
        allowed = kept | frozenset(aliases.values())
        target = day_products[target_day] & allowed
        all_history_days = {d for d, p in days[customer] if d != target_day and p & kept}
        if any(d > target_day for d in all_history_days):
            not_last += 1
        history_days = all_history_days
        history = tuple(
            sorted(
                (r for r in by_customer[customer]
                 if r.timestamp in history_days and r.product_id in kept),
                key=lambda r: r.timestamp,
            )
        )
        json_target = frozenset(
            aliases.get(x, matching.items.get(x, f"?{x}")) for x in baskets[json_user][-1]
        )
        target_equal += json_target == target
        mapped = sorted(
            tuple(sorted(matching.items.get(x, f"?{x}") for x in b))
            for b in baskets[json_user][:-1]
        )
        rebuilt = sorted(tuple(sorted(day_products[d] & kept)) for d in all_history_days)
        baskets_equal += mapped == rebuilt and json_target == target
        users[customer] = UserSequence(
            user_id=customer, history=history, target_items=target,
            target_timestamp=target_day,
        )
    customer_of = dict(matching.users)
    folds = []
    for k, keyset in enumerate(keysets):
        parts = {
            part: tuple(customer_of[u] for u in keyset[part] if u in customer_of)
            for part in ("train", "val", "test")
        }
        folds.append(Fold(index=k, **parts))
    n_users = len(baskets)
    history_baskets = sum(len({r.timestamp for r in u.history}) for u in users.values())
    history_rows = sum(
        len({(r.timestamp, r.product_id) for r in u.history}) for u in users.values()
    )
    verification: dict[str, int | float] = {
        "users": len(users),
        "items": len(kept),
        "history_baskets": history_baskets,
        "history_user_item_rows": history_rows,
        "target_rows": sum(len(u.target_items) for u in users.values()),
        "json_users": n_users,
        "json_users_matched": len(matching.users),
        "target_match_rate": target_equal / n_users,
        "all_baskets_match_rate": baskets_equal / n_users,
        "users_with_target_aliases": len(matching.aliases),
        "users_target_not_latest_day": not_last,
    }
    summary: dict[str, int | float | str] = {"protocol": PROTOCOL_VERSION, **verification}
    dataset = NBRDataset(
        name="tafeng-reality-check", users=users, folds=folds, items=kept, summary=summary
    )
    ids = RealityCheckIds(
        customer_of_user=customer_of,
        product_of_item=dict(matching.items),
        target_aliases={u: dict(a) for u, a in matching.aliases.items()},
    )
    return RealityCheck(dataset=dataset, ids=ids, verification=verification)


def causal_view(result: RealityCheck) -> RealityCheck:
    """Same users, items, targets and folds; history cut to days before the target."""
    source = result.dataset
    users: dict[str, UserSequence] = {}
    dropped = 0
    for key, user in source.users.items():
        history = tuple(r for r in user.history if r.timestamp < user.target_timestamp)
        dropped += len({r.timestamp for r in user.history}) - len({r.timestamp for r in history})
        users[key] = UserSequence(
            user_id=user.user_id, history=history, target_items=user.target_items,
            target_timestamp=user.target_timestamp,
        )
    verification = dict(result.verification)
    verification["history_baskets"] = sum(
        len({r.timestamp for r in u.history}) for u in users.values()
    )
    verification["history_user_item_rows"] = sum(
        len({(r.timestamp, r.product_id) for r in u.history}) for u in users.values()
    )
    verification["history_days_dropped_causal"] = dropped
    dataset = NBRDataset(
        name=source.name + "-causal", users=users, folds=source.folds, items=source.items,
        summary={**source.summary, **verification, "variant": "causal"},
    )
    return RealityCheck(dataset=dataset, ids=result.ids, verification=verification)


def build_reality_check(data_dir: Path | None = None, *, causal: bool = False) -> RealityCheck:
    """Build from scratch (~30 s: raw load ~10 s, id recovery ~15 s)."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    _inputs(data_dir)
    rows = load_tafeng(data_dir / RAW_ZIP)
    by_customer, days = _days_by_customer(rows)
    baskets = read_json_baskets(data_dir)
    keysets = read_keysets(data_dir)
    matching = recover(days, baskets)
    result = _build(by_customer, days, baskets, keysets, matching)
    for key, expected in EXPECTED_COUNTS.items():
        got = result.verification[key]
        if got != expected:
            logger.warning("reality check: %s = %s, expected %s", key, got, expected)
    logger.info(
        "reality check built: %d users, target match %.4f",
        len(result.dataset.users), result.verification["target_match_rate"],
    )
    return causal_view(result) if causal else result


def cache_key(data_dir: Path) -> str:
    digest = hashlib.sha256(PROTOCOL_VERSION.encode())
    for path in _inputs(data_dir):
        digest.update(sha256_of(path).encode())
    return digest.hexdigest()[:16]


def load_reality_check(
    data_dir: Path | None = None,
    *,
    causal: bool = False,
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> RealityCheck:
    """The protocol, from the cache when the input files are unchanged, else built.

    Only the published variant is cached; the causal one is derived from it in ~1 s.
    """
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    if not use_cache:
        return build_reality_check(data_dir, causal=causal)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"tafeng_reality_check_{cache_key(data_dir)}.pkl"
    if path.exists():
        try:
            with open(path, "rb") as handle:
                cached = pickle.load(handle)
            if isinstance(cached, RealityCheck):
                return causal_view(cached) if causal else cached
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            logger.warning("ignoring unreadable cache %s: %s", path, exc)
    result = build_reality_check(data_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    except OSError as exc:
        logger.warning("could not write cache %s: %s", path, exc)
    return causal_view(result) if causal else result


def load_dataset(data_dir: Path | None = None, *, causal: bool = False) -> NBRDataset:
    """Shortcut for methods and the harness: the cached dataset only."""
    return load_reality_check(data_dir, causal=causal).dataset
