"""Tables, sentences and the plot of a multi-net pruning protocol, from its rows only.

Per (ratio, fine-tune recipe, method): the per-net mean over prune seeds, then mean ± sample
standard deviation (n − 1, :func:`sd`) over nets; the paired difference ``reference − method``
over nets with its 95% t-interval (:func:`paired`), and which comparisons survive Holm's
correction (:func:`holm`) in two families: the comparisons at one ratio and recipe, and every
comparison of the whole table. :func:`write_block` replaces the text of one generated block in
a file (the README); ``experiments/readme_report.py --check`` regenerates every block from the
committed results files and reports any difference.
"""
from __future__ import annotations

import pathlib

import numpy as np
from scipy import stats as scipy_stats


def paired(a, b) -> dict:
    """Mean, 95% t-interval and two-sided paired t-test p-value of the differences
    ``a_i − b_i`` (n = len(a)); ``significant`` when the interval excludes 0 (None for
    n < 2)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    if n < 2:
        return {"n": n, "mean": float(d.mean()) if n else None, "lo": None, "hi": None,
                "p": None, "significant": None}
    sd = d.std(ddof=1)
    half = float(scipy_stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n))
    if sd > 0:
        p = float(2 * scipy_stats.t.sf(abs(d.mean()) / (sd / np.sqrt(n)), n - 1))
    else:
        p = 0.0 if d.mean() != 0 else 1.0
    return {"n": n, "mean": float(d.mean()), "lo": float(d.mean() - half),
            "hi": float(d.mean() + half), "p": p, "significant": bool(abs(d.mean()) > half)}


def sd(values) -> float:
    """Sample standard deviation (``ddof=1``, divisor n − 1); NaN for fewer than 2 values."""
    v = np.asarray(list(values), np.float64)
    return float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def pm(values, fmt: str = "{:.2f}") -> str:
    """``mean ± sd`` (sample standard deviation, :func:`sd`) of ``values``; the mean alone for
    a single value."""
    v = np.asarray(list(values), np.float64)
    if len(v) < 2:
        return fmt.format(v.mean()) if len(v) else "–"
    return f"{fmt.format(v.mean())} ± {fmt.format(sd(v))}"


def holm(pvalues, alpha: float = 0.05) -> list[bool]:
    """Holm's step-down test: which of ``m`` hypotheses are rejected at family-wise error
    ``alpha`` (the i-th smallest p against ``alpha / (m − i)``, stopping at the first that
    fails)."""
    order = np.argsort(pvalues)
    out = [False] * len(pvalues)
    for i, k in enumerate(order):
        if pvalues[k] > alpha / (len(pvalues) - i):
            break
        out[k] = True
    return out


def mark_holm(comparisons, field: str, alpha: float = 0.05) -> None:
    """Set ``d[field]`` to Holm's verdict (:func:`holm`) on every :func:`paired` result of
    ``comparisons`` that has a p-value; the family is those results."""
    family = [d for d in comparisons if d is not None and d["p"] is not None]
    for d, rejected in zip(family, holm([d["p"] for d in family], alpha)):
        d[field] = rejected


def _per_net(rows, key: str) -> dict[int, float]:
    nets: dict[int, list] = {}
    for r in rows:
        if r[key] is not None:
            nets.setdefault(r["dense_seed"], []).append(r[key])
    return {n: float(np.mean(v)) for n, v in nets.items()}


def widths_cell(rows) -> str:
    """The kept widths of ``rows``, layer by layer (``a/b/...``), each layer's ``min–max`` over
    the rows where they differ; ``—`` for masks (no widths)."""
    ws = [r["widths"] for r in rows if r.get("widths")]
    if not ws:
        return "—"
    cells = []
    for layer in ws[0]:
        lo, hi = min(w[layer] for w in ws), max(w[layer] for w in ws)
        cells.append(str(lo) if lo == hi else f"{lo}–{hi}")
    return "/".join(cells)


def summarize(rows: list[dict], reference: str) -> list[dict]:
    """One summary per (ratio, recipe, method), in the rows' order of first appearance.

    Each comparison with the reference carries ``holm`` (Holm's correction over the
    comparisons at its ratio and recipe) and ``holm_table`` (over every comparison of the
    table)."""
    keys = list(dict.fromkeys((r["ratio"], r["finetune"], r["method"]) for r in rows))
    out = []
    for ratio, recipe, method in keys:
        mine = [r for r in rows if (r["ratio"], r["finetune"], r["method"]) == (ratio, recipe,
                                                                                method)]
        ref = [r for r in rows if (r["ratio"], r["finetune"], r["method"]) == (ratio, recipe,
                                                                               reference)]
        after, before = _per_net(mine, "err_after_ft"), _per_net(mine, "err_before_ft")
        ref_after = _per_net(ref, "err_after_ft")
        common = sorted(set(after) & set(ref_after))
        pct = _per_net(mine, "random_percentile_before_ft")
        out.append({
            "ratio": ratio, "finetune": recipe, "method": method, "nets": len(after),
            "pr": float(np.mean([r["pr_achieved"] for r in mine])),
            "widths": widths_cell(mine),
            "dense_err": float(np.mean([r["dense_err"] for r in mine])),
            "before_mean": float(np.mean(list(before.values()))),
            "before_std": sd(before.values()),
            "after_mean": float(np.mean(list(after.values()))),
            "after_std": sd(after.values()),
            "after_best": float(min(r["err_after_ft"] for r in mine)),
            "random_pct": float(np.mean(list(pct.values()))) if pct else None,
            "epochs": float(np.mean([r["epochs_to_converge"] for r in mine])),
            "vs_reference": None if method == reference else paired(
                [ref_after[n] for n in common], [after[n] for n in common]),
        })
    for ratio, recipe in dict.fromkeys((s["ratio"], s["finetune"]) for s in out):
        mark_holm([s["vs_reference"] for s in out
                   if (s["ratio"], s["finetune"]) == (ratio, recipe)], "holm")
    mark_holm([s["vs_reference"] for s in out], "holm_table")
    return out


def diff_cell(d, fmt: str = "{:+.2f}") -> str:
    """A :func:`paired` result as a table cell: ``mean [lo, hi]`` with * (the interval
    excludes 0), † (``holm``) and ‡ (``holm_table``); ``—`` for none."""
    if d is None:
        return "—"
    if d["lo"] is None:
        return f"{fmt.format(d['mean'])} (1 net)"
    star = ((" *" if d["significant"] else "") + ("†" if d.get("holm") else "")
            + ("‡" if d.get("holm_table") else ""))
    return f"{fmt.format(d['mean'])} [{fmt.format(d['lo'])}, {fmt.format(d['hi'])}]{star}"


def _mean_sd(mean: float, std: float) -> str:
    """``mean ± sd``, or the mean alone where the sd is undefined (one net)."""
    return f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def markdown(summary: list[dict], reference: str, paper: dict) -> str:
    """The table: errors in %, mean ± sample std (n − 1) over nets, the kept widths per layer
    (range over nets), and the paired difference."""
    lines = [f"| PR target | fine-tune | method | nets | PR achieved | widths | dense err | "
             f"err before FT (mean ± sd) | random pct before FT | err after FT (mean ± sd) | "
             f"best | epochs | {reference} − method, 95% CI | paper ({reference}) |",
             "|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for s in summary:
        pct = "—" if s["random_pct"] is None else f"{s['random_pct']:.0f}"
        lines.append(
            f"| {100 * s['ratio']:.1f} | {s['finetune']} | {s['method']} | {s['nets']} | "
            f"{100 * s['pr']:.2f} | {s['widths']} | {s['dense_err']:.2f} | "
            f"{_mean_sd(s['before_mean'], s['before_std'])} | {pct} | "
            f"{_mean_sd(s['after_mean'], s['after_std'])} | "
            f"{s['after_best']:.2f} | {s['epochs']:.1f} | {diff_cell(s['vs_reference'])} | "
            f"{paper.get(str(s['ratio']), '–') if s['method'] == reference else ''} |")
    return "\n".join(lines)


def _names(items: list[str]) -> str:
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def sentences(summary: list[dict], reference: str) -> str:
    """What the numbers say, written from them: per ratio and recipe, which differences
    ``reference − baseline`` (after fine-tuning) have a 95% interval that excludes 0, which
    survive Holm's correction within that ratio and recipe, and — last — which survive it over
    the whole table's comparisons."""
    out = []
    groups = list(dict.fromkeys((s["ratio"], s["finetune"]) for s in summary))
    for ratio, recipe in groups:
        diffs = [s for s in summary if (s["ratio"], s["finetune"]) == (ratio, recipe)
                 and s["vs_reference"] is not None and s["vs_reference"]["lo"] is not None]
        if not diffs:
            out.append(f"- PR {100 * ratio:.1f} %, {recipe}: one net only — no interval, no "
                       "claim.")
            continue
        better = [s["method"] for s in diffs if s["vs_reference"]["significant"]
                  and s["vs_reference"]["mean"] < 0]
        worse = [s["method"] for s in diffs if s["vs_reference"]["significant"]
                 and s["vs_reference"]["mean"] > 0]
        tied = [s["method"] for s in diffs if not s["vs_reference"]["significant"]]
        n = diffs[0]["vs_reference"]["n"]
        clauses = [f"a significantly lower error than {', '.join(better)}" if better else "",
                   f"a significantly higher error than {', '.join(worse)}" if worse else "",
                   f"no difference from {', '.join(tied)} that the 95 % interval can tell"
                   if tied else ""]
        kept = [s["method"] for s in diffs if s["vs_reference"].get("holm")]
        family = (f" After Holm's correction for the {len(diffs)} comparisons at this ratio "
                  "and recipe, "
                  + (f"the difference{'s' if len(kept) > 1 else ''} from {_names(kept)} "
                     f"remain{'' if len(kept) > 1 else 's'}." if kept else
                     "no difference remains."))
        out.append(f"- PR {100 * ratio:.1f} %, {recipe} fine-tuning ({n} nets): {reference} "
                   f"has {'; '.join(c for c in clauses if c)}.{family}")
    table = [s for s in summary if s["vs_reference"] is not None
             and s["vs_reference"].get("holm_table") is not None]
    if table:
        kept = [s for s in table if s["vs_reference"]["holm_table"]]
        lower = [f"{s['method']} ({100 * s['ratio']:.1f} %, {s['finetune']})" for s in kept
                 if s["vs_reference"]["mean"] < 0]
        higher = [f"{s['method']} ({100 * s['ratio']:.1f} %, {s['finetune']})" for s in kept
                  if s["vs_reference"]["mean"] > 0]
        lost = [f"{s['method']} ({100 * s['ratio']:.1f} %, {s['finetune']})" for s in table
                if s["vs_reference"].get("holm") and not s["vs_reference"]["holm_table"]]
        parts = [f"{reference} is lower than {_names(lower)}" if lower else "",
                 f"{reference} is higher than {_names(higher)}" if higher else ""]
        out.append(f"- Whole table, Holm's correction over all {len(table)} comparisons with "
                   f"{reference}: " + ("; ".join(p for p in parts if p) if kept else
                                       "no difference remains")
                   + (f". Significant within their ratio and recipe but not over the whole "
                      f"table: {_names(lost)}." if lost else "."))
    return "\n".join(out)


def plot(rows: list[dict], summary: list[dict], methods, path, title: str) -> None:
    """Error vs achieved PR with error bars (sample std over nets) per method and recipe; the
    panel right after pruning shades the 5–95 % band of the random subsets' errors (each net's
    percentiles, averaged over the nets)."""
    import matplotlib  # lazy: optional heavy dependency
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: optional heavy dependency

    recipes = list(dict.fromkeys(s["finetune"] for s in summary))
    fig, axes = plt.subplots(1, 1 + len(recipes), figsize=(4.2 * (1 + len(recipes)), 3.6))
    panels = [("before_mean", "before_std", recipes[0], "right after pruning")] + [
        ("after_mean", "after_std", r, f"after {r} fine-tuning") for r in recipes]
    axes = np.atleast_1d(axes)
    # each net's 5th / 95th percentile of its random subsets, averaged over every net
    nulls: dict = {}
    for r in rows:
        if r.get("random_err_p05") is not None:
            nulls.setdefault(r["ratio"], {})[r["dense_seed"]] = (
                r["pr_achieved"], r["random_err_p05"], r["random_err_p95"])
    band = sorted(tuple(np.mean(list(per_net.values()), axis=0)) for per_net in nulls.values())
    if band:
        x, lo, hi = zip(*band)
        axes[0].fill_between(100 * np.asarray(x), lo, hi, color="0.85",
                             label="random subsets, 5–95 % (mean over nets)")
    for ax, (mean, std, recipe, name) in zip(axes, panels):
        for method in methods:
            pts = sorted((s["pr"], s[mean], s[std]) for s in summary
                         if s["method"] == method and s["finetune"] == recipe)
            if pts:
                x, y, e = zip(*pts)
                ax.errorbar(100 * np.asarray(x), y, yerr=e, marker="o", capsize=3, label=method)
        ax.set_xlabel("parameters removed (%)")
        ax.set_ylabel("test error (%)")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def block_markers(doc: str, name: str) -> tuple[str, str]:
    """The begin and end markers of block ``name`` in ``doc``: ``<!-- generated NAME: COMMAND
    -->`` … ``<!-- end generated NAME -->`` (or the older ``<!-- NAME:begin -->`` …
    ``<!-- NAME:end -->``)."""
    import re

    found = re.search(rf"<!-- generated {re.escape(name)}: [^\n]*? -->", doc)
    if found:
        return found.group(0), f"<!-- end generated {name} -->"
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def read_block(doc: str, name: str) -> str | None:
    """The text between block ``name``'s markers in ``doc`` (None if it has none)."""
    begin, end = block_markers(doc, name)
    if begin not in doc or end not in doc:
        return None
    return doc.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def write_block(path: pathlib.Path, name: str, text: str) -> None:
    """Replace the text of block ``name`` in ``path`` (:func:`block_markers`), keeping its
    markers."""
    doc = path.read_text()
    begin, end = block_markers(doc, name)
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path} has no {begin} ... {end} block to write into")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")
