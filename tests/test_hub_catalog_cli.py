"""``storeside-hub import-catalog --csv``: real files, real SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.catalog_store import CatalogStore
from hub.cli import main
from hub.storage import HubDB


def test_import_catalog_upserts_and_refuses_a_bad_file_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'db_path = "{tmp_path / "hub.db"}"\n')
    good = tmp_path / "catalog.csv"
    good.write_text("product_id,name,category,price,brand\n"
                    "p-1,Milk 1l,dairy,1.20,\np-2,Butter,dairy,2.50,Alp\n", encoding="utf-8")
    assert main(["import-catalog", "--config", str(config), "--csv", str(good)]) == 0
    assert '"created": 2' in capsys.readouterr().out
    assert main(["import-catalog", "--config", str(config), "--csv", str(good)]) == 0
    assert '"unchanged": 2' in capsys.readouterr().out

    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,name,price\np-3,Bread,3\np-4,,1\n", encoding="utf-8")
    assert main(["import-catalog", "--config", str(config), "--csv", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 3: name: is required" in err and "nothing imported" in err
    assert main(["import-catalog", "--config", str(config), "--csv",
                 str(tmp_path / "missing.csv")]) == 2
    with HubDB(tmp_path / "hub.db") as db:
        rows = CatalogStore(db).products()
    assert [(r["product_id"], r["price"], r["brand"]) for r in rows] == \
        [("p-1", 1.2, None), ("p-2", 2.5, "Alp")]
