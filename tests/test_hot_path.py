"""The check-in hot path's shortcuts give exactly what the long way gives.

Item feature columns cached per minute, tokens verified without PyJWT's generic path: each
is checked against the plain computation (the guarantees are tested where they live:
tests/test_tokens.py, tests/test_edge_e2e.py, tests/test_edge_restart.py).
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from edge.metrics import EdgeMetrics
from edge.ranking import Ranker
from edge.store import CatalogItem
from edge.tokens import TokenRejected, TokenVerifier
from hub.tokens import SCOPES, generate_signing_key, mint_checkin_token, private_key_pem
from hub.tokens import public_key_pem as public_pem
from models.features import Context, CustomerHistory, ItemStats, build_features, item_features
from models.item_stats import DAY
from models.synthetic import synthetic_transactions
from models.transactions import Transaction


@pytest.fixture(scope="module")
def rows() -> list[Transaction]:
    return list(synthetic_transactions(customers=40, products=60, days=40, seed=5))


@pytest.fixture(scope="module")
def stats(rows: list[Transaction]) -> ItemStats:
    return ItemStats.build(rows)


def test_cached_item_columns_give_the_same_features(rows, stats) -> None:
    products = [*sorted({r.product_id for r in rows}), "never-sold"]
    ctx = Context(timestamp=stats.last_ts + DAY, store_id="S0", utc_offset_s=3600)
    items = item_features(products, stats, ctx, "S0")
    for customer in sorted({r.customer_id for r in rows})[:5]:
        history = CustomerHistory.from_transactions(
            [r for r in rows if r.customer_id == customer])
        plain = build_features(history, products, stats, ctx)
        np.testing.assert_array_equal(build_features(history, products, stats, ctx, items),
                                      plain)
    empty = CustomerHistory.from_transactions([])
    np.testing.assert_array_equal(build_features(empty, products, stats, ctx, items),
                                  build_features(empty, products, stats, ctx))
    assert not items.base.flags.writeable  # shared between visits: never written to


def test_ranker_reuses_item_columns_within_a_minute_only(rows, stats, monkeypatch) -> None:
    ranker = Ranker(EdgeMetrics(), None)
    ranker.refresh_stats(rows, as_of=stats.last_ts)
    catalog = [CatalogItem(pid, pid, "c", 1.0, 5, None) for pid in
               sorted({r.product_id for r in rows})]
    history = CustomerHistory.from_transactions([r for r in rows if r.customer_id == rows[0]
                                                 .customer_id])
    built: list[float] = []
    import edge.ranking as ranking

    real = ranking.item_features

    def counting(ids, st, context, store):  # type: ignore[no-untyped-def]
        built.append(context.timestamp)
        return real(ids, st, context, store)

    monkeypatch.setattr(ranking, "item_features", counting)
    minute = (stats.last_ts // 60 + 10) * 60
    first = ranker.rank(history, catalog, Context(minute + 1, "S0"), 10)
    again = ranker.rank(history, catalog, Context(minute + 59, "S0"), 10)
    assert len(built) == 1 and first.source == again.source == "model"
    ranker.rank(history, catalog, Context(minute + 60, "S0"), 10)  # next minute: rebuilt
    ranker.rank(history, catalog[:-1], Context(minute + 61, "S0"), 10)  # another item list
    ranker.rank(history, catalog[:-1], Context(minute + 62, "S1"), 10)  # another store
    assert len(built) == 4
    # and what it ranks is what the uncached features rank
    plain = Ranker(EdgeMetrics(), None)
    plain.refresh_stats(rows, as_of=stats.last_ts)
    ctx = Context(minute + 59, "S0")
    assert [c.product_id for c in plain.rank(history, catalog, ctx, 10).candidates] == \
        [c.product_id for c in again.candidates]


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_token_with_critical_header_extensions_is_refused() -> None:
    key = generate_signing_key()
    verifier = TokenVerifier({"k1": public_pem(key)}, chain="acme", store="s001")
    token = mint_checkin_token(private_key_pem(key), kid="k1", subject="m-1", chain="acme",
                               store="s001", scopes=SCOPES, now=1_000.0)
    head, body, sig = token.split(".")
    for extra in ({"crit": ["exp"]}, {"b64": False}):
        header = {**json.loads(base64.urlsafe_b64decode(head + "==")), **extra}
        with pytest.raises(TokenRejected) as info:
            verifier.verify(f"{_b64(header)}.{body}.{sig}", 1_000.0)
        assert info.value.reason == "malformed"
    truncated_sig = sig[:-4]
    with pytest.raises(TokenRejected) as info:
        verifier.verify(f"{head}.{body}.{truncated_sig}", 1_000.0)
    assert info.value.reason in ("bad_signature", "malformed")
    assert verifier.verify(token, 1_000.0).subject == "m-1"
