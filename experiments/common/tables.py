"""Shared reporting for the pruning experiments: per-(ratio, method) summaries, a markdown
table shaped like the papers' tables, and an error-vs-ratio plot (before/after fine-tuning)."""
from __future__ import annotations

import json
from typing import Callable, Sequence

import numpy as np

from jaxprune.checkpoint import to_jsonable


def rows_of(result: dict, ratio: float, method: str) -> list[dict]:
    return [r for r in result["rows"] if r["ratio"] == ratio and r["method"] == method]


def stats(values) -> tuple[float, float, float]:
    """(best = min, mean, std) of error values."""
    v = np.asarray(values, np.float64)
    return v.min(), v.mean(), v.std()


def err_cells(rows: list[dict]) -> str:
    """``before-FT mean ± std | best (mean ± std)`` cells from ``err_before_ft``/``err_after_ft``."""
    _, b_mean, b_std = stats([r["err_before_ft"] for r in rows])
    a_best, a_mean, a_std = stats([r["err_after_ft"] for r in rows])
    return f"{b_mean:.2f} ± {b_std:.2f} | {a_best:.2f} ({a_mean:.2f} ± {a_std:.2f})"


def markdown_table(result: dict, ratios: Sequence[float], methods: Sequence[str],
                   header: str, cells: Callable[[float, str, list], str]) -> str:
    """One row per (ratio, method); ``cells(ratio, method, rows)`` gives the row's body."""
    ncols = header.count("|") - 1
    lines = [header, "|" + "---|" * ncols]
    for ratio in ratios:
        for method in methods:
            lines.append(f"| {cells(ratio, method, rows_of(result, ratio, method))} |")
    return "\n".join(lines)


def save_outputs(out, result: dict, table: str, plot: Callable) -> None:
    """``results.json``, ``table.md`` (also printed) and ``error_vs_ratio.png`` under ``out``."""
    (out / "results.json").write_text(json.dumps(to_jsonable(result), indent=2))
    (out / "table.md").write_text(table + "\n")
    print(table)
    plot(out / "error_vs_ratio.png")


def plot_error_vs_ratio(result: dict, ratios: Sequence[float], methods: Sequence[str], path,
                        x_of: Callable[[dict], float], xlabel: str, title: str) -> None:
    """Two panels (right after pruning, after fine-tuning): mean ± std error vs achieved ratio."""
    import matplotlib  # lazy: optional heavy dependency
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: optional heavy dependency

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, panel in zip(axes, ("err_before_ft", "err_after_ft"),
                              ("right after pruning", "after fine-tuning")):
        for method in methods:
            groups = [rows_of(result, q, method) for q in ratios]
            ax.errorbar([np.mean([x_of(r) for r in g]) for g in groups],
                        [np.mean([r[key] for r in g]) for g in groups],
                        yerr=[np.std([r[key] for r in g]) for g in groups],
                        marker="o", capsize=3, label=method)
        ax.axhline(result["baseline_err"], color="k", lw=0.8, ls=":", label="dense")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test error (%)")
        ax.set_yscale("log")
        ax.set_title(panel)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
