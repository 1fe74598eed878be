"""Tables of the bounds report (markdown) and its JSON encoding.

Every table is a function of the ``result`` dictionary the experiment writes to
``results.json`` (raw, or re-read with :func:`unjson`), so that ``--replot`` rebuilds the
report from the JSON alone.
"""
from __future__ import annotations

import math

import numpy as np

from experiments.bounds_lab.figures import (plot_alpha, plot_finetune, plot_guarantee,
                                            plot_sparsity_first)
from experiments.bounds_lab.samplers import METHOD_LABEL

__all__ = ["PAPER_CARD", "PAPER_HIDDEN", "jsonable", "unjson", "fmt_count", "fmt_pm",
           "fmt_eps", "cases_table", "report_card_table", "sparsity_first_table",
           "finetune_table", "hidden_table", "alpha_table", "write_report"]

# Figure 2 of the bounds paper, LeNet rows: (ε, observed mean, observed std, samples, sparsity %)
PAPER_CARD = {
    ("sipp_rand", "easy"): (0.46, 0.04, 0.18, 271e3, 94.06),
    ("sipp_rand", "moderate"): (0.46, 0.02, 0.11, 1e6, 19.90),
    ("sipp_rand", "difficult"): (0.49, 0.03, 0.18, 1e6, 0.00),
    ("sipp_det", "easy"): (0.46, 0.00, 0.00, 60, 94.06),
    ("sipp_det", "moderate"): (0.46, 0.01, 0.04, 657, 34.95),
    ("sipp_det", "difficult"): (0.49, 0.01, 0.04, 927, 8.22),
    ("mussay", "easy"): (5.69, 0.06, 0.05, 62e3, 90.00),
    ("mussay", "moderate"): (3.30, 0.04, 0.03, 97e3, 16.00),
    ("mussay", "difficult"): (5.20, 0.13, 0.09, 114e3, 0.00),
}
# §5.2 table, LeNet rows: (sparsity, prune acc, out err, out std, hidden err, hidden std,
#                          post-KD acc, out err, out std, hidden err, hidden std)
PAPER_HIDDEN = {
    "neuron": (0.90, 0.4809, 6.78, 5.68, 1.22, 1.08, 0.9513, 2.95, 2.83, 1.72, 1.44),
    "weight": (0.95, 0.773, 1.37, 5.11, 1.90, 4.89, 0.9762, 0.71, 0.84, 1.96, 5.10),
}



def jsonable(obj):
    """numpy → Python; ``inf`` → "inf", ``nan`` → None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        if math.isnan(f):
            return None
        return f if math.isfinite(f) else ("inf" if f > 0 else "-inf")
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_report(result, out):
    """report.md (printed too) and the four PNGs from a result (raw or re-read from JSON)."""
    tables = [cases_table(result), report_card_table(result),
              sparsity_first_table(result), finetune_table(result), hidden_table(result),
              alpha_table(result)]
    text = "\n\n".join(tables)
    (out / "report.md").write_text("# Bounds report (LeNet-300-100, real MNIST)\n\n" + text
                                   + "\n")
    plot_guarantee(result, out / "accuracy_vs_guarantee.png")
    plot_sparsity_first(result, out / "sparsity_first.png")
    plot_finetune(result, out / "finetune_gap.png")
    plot_alpha(result, out / "alpha_scaling.png")
    print("\n" + text + "\n", flush=True)


def unjson(obj):
    """Inverse of :func:`jsonable` for the numbers: "inf" → ``inf``."""
    if isinstance(obj, dict):
        return {k: unjson(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unjson(v) for v in obj]
    if obj in ("inf", "-inf"):
        return float(obj)
    return obj


def fmt_count(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if not math.isfinite(x):
        return "∞"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if x >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.0f}"


def fmt_pm(pair, digits=2):
    m, s = pair
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    return f"{m:.{digits}f}±{s:.{digits}f}"


def fmt_eps(e):
    return "∞" if not math.isfinite(e) else f"{e:.3g}"


def case_label(name):
    return "easy" if name.startswith("easy") else name


def card_rows(result):
    g = result["args"]["guarantee"]
    rows = []
    for r in result["analyses"]:
        row = next(x for x in r["epsilon_first"] if x["fraction"] == g)
        rows.append((r, row))
    return rows


def _table(lines, rows) -> str:
    """A markdown table: ``lines`` (intro paragraphs, then the header row), the header's
    ``|---|`` rule, then ``rows``."""
    rule = "|" + "---|" * (lines[-1].count("|") - 1)
    return "\n".join([*lines, rule, *rows])


def report_card_table(result) -> str:
    args = result["args"]
    lines = [f"Figure 2 — epsilon-first pruning of LeNet-300-100's final layer, guaranteeing "
             f"{args['guarantee']:.0%} of the correct dev labels (δ = {args['delta']}).",
             "",
             "Observed err: per dev example the max over the 10 logits of the error in the "
             "bound's kind (mult. = |f̂−f|/|f|, add. = |f̂−f|), mean±std over examples "
             "[median]; 'unit mean' averages over the logits instead of the max.",
             "",
             "| Prune type | Case | Required ε | Observed err (max) | Observed err (unit mean) "
             "| Acc dense → pruned | kept correct (guaranteed) | Layer size | Samples required "
             "| Sparsity (%) | paper: ε · obs · samples · sparsity |"]
    rows = []
    for r, row in card_rows(result):
        case = case_label(r["network"])
        paper = PAPER_CARD.get((r["method"], case))
        ptxt = ("–" if paper is None else
                f"{paper[0]:.2f} · {paper[1]:.2f}±{paper[2]:.2f} · {fmt_count(paper[3])} · "
                f"{paper[4]:.2f}")
        samples = row["samples"]
        size = row["layer_size"]
        rel = ("" if not math.isfinite(samples) else f" ({samples / size:.3g}× layer)")
        vac = " **vacuous**" if row["vacuous"] else ""
        lim = " (m→∞ limit net)" if row.get("limit_network") else ""
        rows.append(
            f"| {METHOD_LABEL[r['method']]} | {case} ({r['network']}) | "
            f"{fmt_eps(row['epsilon'])} ({r['kind'][:4]}.) | {fmt_pm(row['observed'])} "
            f"[{row['observed_median']:.3g}] | {fmt_pm(row['observed_unit_mean'])} | "
            f"{r['dense_accuracy']:.4f} → {row['accuracy']:.4f} | "
            f"{row['kept_correct']:.4f} ({row['guaranteed_fraction']:.2f}) | {size:,} | "
            f"{fmt_count(samples)}{rel}{vac} | {100 * row['sparsity']:.2f}{lim} | {ptxt} |")
    return _table(lines, rows)


def cases_table(result) -> str:
    lines = ["Training cases (LeNet-300-100, dev = MNIST test split)", "",
             "| case | description | dev accuracy | final layer: zero weights | last hidden: "
             "neurons with zero outgoing weights | train time (s) |"]
    rows = []
    for c in result["cases"]:
        rows.append(f"| {c['name']} | {c['description']} | {c['accuracy']:.4f} | "
                    f"{100 * c['head_zero_fraction']:.1f}% | {c['dead_neurons']}/100 | "
                    f"{c['seconds']:.0f} |")
    return _table(lines, rows)


def sparsity_first_table(result) -> str:
    lines = ["Sparsity-first pruning of the final layer (implied ε from the number of draws; "
             "guarantee = Lemma 4.1 fraction of correct labels)", "",
             "| Prune type | Case | target sparsity | achieved | draws m | implied ε | "
             "guaranteed fraction | accuracy | observed err |"]
    rows = []
    for r in result["analyses"]:
        for x in r["sparsity_first"]:
            head = f"| {METHOD_LABEL[r['method']]} | {r['network']} | {x['target_sparsity']:.2f} |"
            if "unreachable" in x:
                msg = x["unreachable"].replace("|", "/")
                rows.append(f"{head} **unreachable** — {msg[:160]} | | | | | | |")
                continue
            rows.append(f"{head} {x['sparsity']:.3f} | {fmt_count(x['samples'])} | "
                        f"{fmt_eps(x['epsilon'])} | {x['guaranteed_fraction']:.3f} | "
                        f"{x['accuracy']:.4f} | {fmt_pm(x['observed'])} |")
    return _table(lines, rows)


def finetune_table(result) -> str:
    lines = ["Figure 3 — fine-tuning gap: difficult net, final layer pruned sparsity-first with "
             "deterministic SiPP, then CE fine-tuning or logit-matching KD (logit errors: "
             "multiplicative / additive, mean±std)", "",
             "| sparsity | implied ε | guaranteed acc | acc pruned | acc fine-tuned | acc KD | "
             "logit err pruned | logit err fine-tuned | logit err KD |"]
    rows = []
    for r in result["finetune_gap"]:
        def e(tag):
            x = r[f"error_{tag}"]
            return f"{fmt_pm(x['multiplicative'])} / {fmt_pm(x['additive'])}"
        rows.append(f"| {r['sparsity']:.3f} | {fmt_eps(r['epsilon'])} | "
                    f"{r['guaranteed_accuracy']:.4f} | {r['accuracy_pruned']:.4f} | "
                    f"{r['accuracy_finetuned']:.4f} | {r['accuracy_kd']:.4f} | {e('pruned')} | "
                    f"{e('finetuned')} | {e('kd')} |")
    return _table(lines, rows)


def hidden_table(result) -> str:
    lines = ["§5.2 — hidden vs output error: the FIRST layer of the difficult net pruned, then "
             "logit-matching KD.  Errors in the bound's kind (additive for neurons, "
             "multiplicative for weights): max over units, mean±std over dev examples "
             "[median]; then the mean over units.  Hidden = the pre-activation the pruned "
             "layer's bound speaks about (z1 for weights of dense_0, z2 for its neurons).", "",
             "| Prune type | sparsity | prune acc | output err | hidden err | post-KD acc | "
             "output err | hidden err | paper (acc, out, hidden → KD acc, out, hidden) |"]
    rows = []
    for name, r in result["hidden_vs_output"].items():
        k = r["bound_kind"]

        def e(key):
            x = r[key]
            return (f"{fmt_pm(x[k])} [{x[k + '_median']:.3g}]; unit mean "
                    f"{fmt_pm(x[k + '_unit_mean'])}")
        pp = PAPER_HIDDEN[name]
        ptxt = (f"{pp[1]:.3f}, {pp[2]:.2f}±{pp[3]:.2f}, {pp[4]:.2f}±{pp[5]:.2f} → {pp[6]:.3f}, "
                f"{pp[7]:.2f}±{pp[8]:.2f}, {pp[9]:.2f}±{pp[10]:.2f} (at {pp[0]:.2f})")
        label = ("Neuron (Mussay, dense_0 → z2)" if name == "neuron"
                 else "Wt Det (SiPP, dense_0 → z1)")
        rows.append(f"| {label} | {r['sparsity']:.3f} | {r['accuracy_pruned']:.4f} | "
                    f"{e('output_error_pruned')} | {e('hidden_error_pruned')} | "
                    f"{r['accuracy_kd']:.4f} | {e('output_error_kd')} | {e('hidden_error_kd')} "
                    f"| {ptxt} |")
    return _table(lines, rows)


def alpha_table(result) -> str:
    lines = ["Lemma C.1 / Corollary C.2 — W⁽¹⁾ (dense_1, bias embedded) scaled by α on the "
             "difficult net (head bias scaled too, so f → αf)", "",
             "| α | t(α)/t(1) (Mussay) | labels unchanged | max dev from αf | ε_add (ratio) | "
             "ε_mul | Mussay samples (ratio) | SiPP S ratio | coreset t ratio | "
             "t ratio, W⁽²⁾→W⁽²⁾/α |"]
    rows = []
    for r in result["alpha_scaling"]:
        rows.append(f"| {r['alpha']:g} | {r['t_ratio']:.6g} | {r['labels_unchanged']:.4f} | "
                    f"{r['max_rel_dev_from_alpha_f']:.1e} | {r['epsilon_additive']:.4g} "
                    f"({r['epsilon_additive_ratio']:.4g}) | {r['epsilon_multiplicative']:.4g} | "
                    f"{fmt_count(r['mussay_samples'])} ({r['samples_ratio']:.3g}) | "
                    f"{r['sipp_ratio']:.6f} | {r['coreset_ratio']:.6f} | "
                    f"{r['t_rebalanced_ratio']:.6f} |")
    return _table(lines, rows)
