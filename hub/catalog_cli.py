"""``storeside-hub import-catalog --csv FILE``: upsert products from the PIM / ERP export.

Same checks and the same write as ``PUT /v1/catalog/products`` with a CSV body, on the hub's
database directly (SQLite WAL: safe beside a serving hub). The file is refused as a whole when
a row is bad, and the answer names that row's line number, so a fixed file can simply be
imported again (unchanged products cost nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hub.catalog_rows import InputError, parse_products_csv
from hub.catalog_store import CatalogStore
from hub.serve import add_config_argument, settings_from
from hub.storage import HubDB


def _fail(message: str) -> int:
    print(f"storeside-hub import-catalog: error: {message}", file=sys.stderr)
    return 2


def cmd_import_catalog(args: argparse.Namespace) -> int:
    try:
        text = Path(args.csv).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"cannot read {args.csv}: {exc}")
    try:
        products = parse_products_csv(text)
    except InputError as exc:
        where = "" if exc.index is None else f"line {exc.index + 2}: "  # + header, 1-based
        return _fail(f"{where}{exc.field}: {exc.message} ({exc.reason}); nothing imported")
    settings = settings_from(args)
    db = HubDB(settings.db_path)
    try:
        result = CatalogStore(db).upsert_products(products)
    finally:
        db.close()
    print(json.dumps(result))
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("import-catalog", help="upsert products from a CSV file "
                            "(product_id,name,category,price,brand)")
    add_config_argument(parser)
    parser.add_argument("--csv", required=True, help="CSV file with a header row")
    parser.set_defaults(func=cmd_import_catalog)
