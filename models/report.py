"""A small markdown report with plots from ``models.evaluate`` results.

Written next to the JSON (``--report-dir``), never committed: numbers change with every
model. matplotlib is imported inside ``write_report`` (Agg backend) so importing this
module costs nothing on a store device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models.evaluate import bucket_order

OVERALL_METRICS = ("recall", "ndcg", "ndcg_capped", "phr")
SPLIT_METRICS = ("recall", "phr")


def _wanted(results: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    return [f"{m}@{k}" for k in results.get("ks", [10, 20]) for m in metrics]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _columns(results: Mapping[str, Any], group: str, wanted: Sequence[str]) -> list[str]:
    present = set()
    for method in results["methods"].values():
        present |= set(method["mean"].get(group, {}))
    return [c for c in wanted if c in present]


def markdown(results: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """The report text (plots are linked by file name)."""
    methods = results["methods"]
    folds = results.get("folds", [])
    lines = [
        f"# NBR evaluation: {results.get('dataset', '?')}",
        "",
        f"Mean over folds {folds}. NDCG is the papers' (ideal DCG over all target items); "
        "`ndcg_capped` caps the ideal at min(K, |target|). Repeat = target items the user "
        "bought before, explore = new ones; each averaged over users that have such items.",
        "",
        "## Overall",
    ]
    cols = _columns(results, "overall", _wanted(results, OVERALL_METRICS))
    lines += _table(["method", *cols],
                    [[n, *(m["mean"]["overall"].get(c, "") for c in cols)]
                     for n, m in methods.items()])
    for group in ("repeat", "explore"):
        cols = _columns(results, group, _wanted(results, SPLIT_METRICS))
        if not cols:
            continue
        lines += ["", f"## {group.capitalize()} items"]
        lines += _table(
            ["method", *cols, "users/fold"],
            [[n, *(m["mean"].get(group, {}).get(c, "") for c in cols),
              f"{m['mean'].get(group, {}).get('users', 0):.1f}"] for n, m in methods.items()],
        )
    k = results.get("ks", [10])[0]
    lines += ["", f"## Recall@{k} per fold"]
    lines += _table(
        ["method", *(str(f) for f in folds)],
        [[n, *(r["overall"][f"recall@{k}"] for r in m["per_fold"])] for n, m in methods.items()],
    )
    buckets = [b for b in bucket_order()
               if any(b in m["by_history_length"] for m in methods.values())]
    if buckets:
        lines += ["", f"## Recall@{k} by number of history baskets"]
        lines += _table(
            ["method", *buckets],
            [[n, *(m["by_history_length"].get(b, {}).get("overall", {}).get(f"recall@{k}", "")
                   for b in buckets)] for n, m in methods.items()],
        )
        first = next(iter(methods.values()))["by_history_length"]
        lines += ["", "Users per fold: " + ", ".join(
            f"{b}: {first[b]['overall']['users']:.0f}" for b in buckets if b in first)]
    summary = results.get("summary") or {}
    if summary:
        lines += ["", "## Dataset", ""]
        lines += [f"- {key}: {_fmt(value)}" for key, value in summary.items()]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _plot_methods(results: Mapping[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(results["methods"])
    metrics = _columns(results, "overall", _wanted(results, ("recall", "ndcg")))
    x = np.arange(len(methods))
    width = 0.8 / max(1, len(metrics))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(methods)), 4))
    for i, metric in enumerate(metrics):
        values = [results["methods"][m]["mean"]["overall"][metric] for m in methods]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=metric)
    ax.set_xticks(x, methods, rotation=20, ha="right")
    ax.set_ylabel("mean over folds")
    ax.set_title("Metric by method")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_buckets(results: Mapping[str, Any], path: Path, metric: str) -> None:
    import matplotlib.pyplot as plt

    buckets = [b for b in bucket_order()
               if any(b in m["by_history_length"] for m in results["methods"].values())]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, method in results["methods"].items():
        ys = [method["by_history_length"].get(b, {}).get("overall", {}).get(metric)
              for b in buckets]
        ax.plot(buckets, [float("nan") if y is None else y for y in ys], marker="o", label=name)
    ax.set_xlabel("history baskets")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by history length")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``report.md``, ``methods.png`` and ``history_length.png``; returns the md path."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    if results.get("methods"):
        _plot_methods(results, out / "methods.png")
        k = results.get("ks", [10])[0]
        _plot_buckets(results, out / "history_length.png", f"recall@{k}")
        plots = ["methods.png", "history_length.png"]
    path = out / "report.md"
    path.write_text(markdown(results, plots), encoding="utf-8")
    return path
