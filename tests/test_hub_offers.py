"""Offer validation and targeting (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.catalog_rows import InputError
from hub.offers import (
    OfferSpec,
    applies,
    is_active,
    is_expired,
    parse_offer,
    store_targets,
    targeted_stores,
)

NOW = 1_700_000_000.0


def doc(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"offer_id": "o-1", "product_id": "p-1", "discount_pct": 10,
                            "valid_from": NOW - 10, "valid_to": NOW + 3600}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def test_parse_normalises_stores_and_keeps_fields() -> None:
    offer = parse_offer(doc(stores=["s2", "s1", "s2"], segment="gold", title="Autumn"))
    assert offer.stores == ("s1", "s2")
    assert offer.as_dict()["stores"] == ["s1", "s2"]
    assert parse_offer(offer.as_dict()) == offer


@pytest.mark.parametrize(("body", "field"), [
    ("nope", "body"),
    (doc(offer_id="bad id"), "offer_id"),
    (doc(product_id=None), "product_id"),
    (doc(discount_pct=0), "discount_pct"),
    (doc(discount_pct=101), "discount_pct"),
    (doc(discount_pct=True), "discount_pct"),
    (doc(discount_pct=float("nan")), "discount_pct"),
    (doc(valid_to=NOW - 10), "valid_to"),
    (doc(valid_from="today"), "valid_from"),
    (doc(stores="all"), "stores"),
    (doc(stores=["Bad Store"]), "stores"),
    (doc(segment="a b"), "segment"),
    (doc(colour="red"), "colour"),
])
def test_bad_offers_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(InputError) as err:
        parse_offer(body)
    assert err.value.field == field
    assert err.value.detail()["reason"] == "bad_offer"


def test_path_id_wins_and_must_agree() -> None:
    assert parse_offer(doc(offer_id=None), offer_id="o-9").offer_id == "o-9"
    with pytest.raises(InputError, match="differs"):
        parse_offer(doc(), offer_id="o-9")


def test_window_is_half_open() -> None:
    offer = parse_offer(doc(valid_from=NOW, valid_to=NOW + 1))
    assert is_active(offer, NOW) and not is_active(offer, NOW + 1)
    assert not is_active(offer, NOW - 0.001)
    assert is_expired(offer, NOW + 1) and not is_expired(offer, NOW)


def test_store_targets_all_list_and_segment() -> None:
    everywhere = parse_offer(doc())
    assert store_targets(everywhere, ["s1", "s2"], None) == {"s1": None, "s2": None}
    listed = parse_offer(doc(stores=["s2", "s9"]))
    assert targeted_stores(listed, ["s1", "s2"]) == {"s2"}
    seg = parse_offer(doc(segment="gold"))
    targets = store_targets(seg, ["s1", "s2", "s3"], {"s1": {"m-2", "m-1"}, "s2": set()})
    assert targets == {"s1": ("m-1", "m-2")}  # no eligible member in s2/s3: not sent there


def test_applies_checks_store_segment_window_and_item() -> None:
    offer = parse_offer(doc(category="dairy", stores=["s1"], segment="gold"))
    ok = dict(store="s1", now=NOW, product_id="p-1", category="dairy",
              member_segments={"gold"})
    assert applies(offer, **ok)  # type: ignore[arg-type]
    for change in ({"store": "s2"}, {"now": NOW + 7200}, {"product_id": "p-2"},
                   {"category": "meat"}, {"member_segments": set()}):
        assert not applies(offer, **{**ok, **change})  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["s1", "s2", "s3", "s4"]), unique=True),
       st.one_of(st.none(), st.lists(st.sampled_from(["s1", "s2", "s5"]), unique=True)),
       st.booleans(),
       st.dictionaries(st.sampled_from(["s1", "s2", "s3", "s5"]),
                       st.sets(st.sampled_from(["m-1", "m-2"]))))
def test_targets_are_registered_listed_and_eligible(
    registered: list[str], stores: list[str] | None, segmented: bool,
    eligible: dict[str, set[str]],
) -> None:
    offer = OfferSpec("o", "p", None, 5.0, 0.0, 1.0, "seg" if segmented else None,
                      None if stores is None else tuple(stores))
    targets = store_targets(offer, registered, eligible)
    for store, subjects in targets.items():
        assert store in registered
        assert stores is None or store in stores
        if segmented:
            assert subjects and set(subjects) == eligible[store]
            assert applies(offer, store=store, now=0.5, product_id="p",
                           member_segments={"seg"})
        else:
            assert subjects is None
    if not segmented:
        assert set(targets) == targeted_stores(offer, registered)
