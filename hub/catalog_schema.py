"""Hub schema steps 10..19: catalog, store metadata, assortment + stock, offers, segments.

Listed in ``hub.migrations.MIGRATIONS``. The per-store feeds are *materialised*: one row per
(store, product) and per (store, offer) holding the state the store must have and the change
sequence of its last change (``HubDB.next_seq``). A feed page is then one range scan on
``(store, seq)``, and a removal is a row kept with ``listed = 0`` / ``live = 0`` (a tombstone)
so a store that polls later still learns to delete it.
"""

from __future__ import annotations

from models.sqlite_schema import Migration

CATALOG = Migration(
    10,
    "products, store metadata, assortment and stock, offers and their store targets, segments",
    (
        """CREATE TABLE products (
            product_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            category TEXT,
            price REAL NOT NULL,
            brand TEXT,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID""",
        # Metadata beside hub-core's stores row (name lives there).
        """CREATE TABLE store_meta (
            store_id TEXT PRIMARY KEY,
            timezone TEXT NOT NULL,
            zones TEXT NOT NULL DEFAULT '[]',   -- JSON list of zone names
            updated_at REAL NOT NULL
        ) WITHOUT ROWID""",
        # listed = 0: removed from the store (sent as a delete); stock is kept so re-listing
        # a product does not forget the ERP's last count.
        """CREATE TABLE assortment (
            store TEXT NOT NULL,
            product_id TEXT NOT NULL,
            zone TEXT,
            stock INTEGER NOT NULL DEFAULT 0,
            listed INTEGER NOT NULL DEFAULT 1,
            seq INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (store, product_id)
        ) WITHOUT ROWID""",
        "CREATE UNIQUE INDEX assortment_feed ON assortment(store, seq)",
        "CREATE INDEX assortment_product ON assortment(product_id) WHERE listed = 1",
        """CREATE TABLE segments (
            segment_id TEXT PRIMARY KEY,
            name TEXT,
            rule TEXT NOT NULL,                  -- normalised JSON rule (hub.segments)
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE offers (
            offer_id TEXT PRIMARY KEY,
            product_id TEXT,
            category TEXT,
            discount_pct REAL NOT NULL,
            valid_from REAL NOT NULL,
            valid_to REAL NOT NULL,
            segment TEXT,
            stores TEXT,                         -- JSON list, NULL = every store
            title TEXT,
            withdrawn_at REAL,                   -- NULL = live
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX offers_segment ON offers(segment) WHERE segment IS NOT NULL",
        # live = 0: withdrawn there (sent as a delete). subjects: JSON list for a segment
        # offer (that store's eligible members), NULL = every customer.
        """CREATE TABLE offer_targets (
            store TEXT NOT NULL,
            offer_id TEXT NOT NULL,
            live INTEGER NOT NULL,
            subjects TEXT,
            seq INTEGER NOT NULL,
            PRIMARY KEY (store, offer_id)
        ) WITHOUT ROWID""",
        "CREATE UNIQUE INDEX offer_targets_feed ON offer_targets(store, seq)",
        "CREATE INDEX offer_targets_offer ON offer_targets(offer_id)",
        # When each store's offer targets were last reconciled (segment membership moves
        # with baskets and relevance; see hub.offer_store.reconcile_store).
        """CREATE TABLE offer_refresh (
            store TEXT PRIMARY KEY,
            refreshed_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
)

# The hub page counts KPIs over a recent window of the (large, append-only) events table.
KPI_INDEX = Migration(
    11,
    "index of store events by time, for the hub page's KPIs",
    ("CREATE INDEX events_created ON events(created_at)",),
)

# The change sequence at a store's last offer reconcile: a profile-feed delete after it
# (consent revoked, erased, no longer relevant) re-targets segment offers at the next poll
# instead of after ``catalog.offers_refresh_s``.
OFFER_REFRESH_SEQ = Migration(
    12,
    "offer refresh remembers the change sequence it ran at",
    ("ALTER TABLE offer_refresh ADD COLUMN refreshed_seq INTEGER NOT NULL DEFAULT 0",),
)

# Styles: ``style_id`` groups the variants (colours, sizes) of one product model; NULL: the
# product is a style of its own. Sent in the catalog feed so a store shows one suggestion per
# style; a style change is a feed change like a name change.
PRODUCT_STYLES = Migration(
    13,
    "products.style_id: variants of one style",
    ("ALTER TABLE products ADD COLUMN style_id TEXT",),
)
