"""Every generated block of the README and the documentation pages, rendered from the
committed results files alone (no training, a few seconds).

A generated block sits between ``<!-- generated NAME: COMMAND -->`` and
``<!-- end generated NAME -->`` in ``README.md`` or a page under ``docs/``; COMMAND is the one
that rewrites it. Each block has one renderer here (:data:`BLOCKS`), which calls the same
function its experiment script uses for ``table.md`` and ``--readme`` (so both write the same
text). A block may appear in several files (the README's summary and the results page both
hold ``summary``); every copy is checked and written:

    python experiments/readme_report.py --check            # exit 1 and a diff on any drift
    python experiments/readme_report.py --write            # rewrite every block, every file
    python experiments/readme_report.py --write --block table1

``--check`` also compares each experiment's committed ``table.md`` with what its script's
``--report-only`` would write (:data:`TABLE_FILES`). ``tests/test_readme_blocks.py`` runs both
comparisons.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import json
import pathlib
import sys

import numpy as np

EXPERIMENTS = pathlib.Path(__file__).resolve().parent
ROOT = EXPERIMENTS.parent
RESULTS = EXPERIMENTS / "results"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments.common import protocol, report  # noqa: E402


def _script(name: str):
    """The script ``experiments/<name>.py`` as the module ``experiments.<name>``."""
    return importlib.import_module(f"experiments.{name}")


def _load(folder: str) -> dict:
    return json.loads((RESULTS / folder / "results.json").read_text())


def _minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s} s"


# --- the Table 1 protocol (lenet300_mnist.py, lenet5_mnist.py) --------------------------------

def table1(folder: str = "lenet300_mnist") -> str:
    mod = _script("lenet300_mnist")
    return protocol.report_text(_load(folder), mod.REFERENCE, mod.PAPER_ERR)


def table1weak() -> str:
    return table1("lenet300_mnist_weak")


def table1anneal() -> str:
    return table1("lenet300_mnist_anneal")


def table1uniform() -> str:
    return table1("lenet300_mnist_uniform")


def anneal_vs_early_stop() -> str:
    """The annealed rerun's rows matched with the committed early_stop run
    (``compare_schedules.py``)."""
    mod = _script("compare_schedules")
    return mod.table(mod.matched(_load("lenet300_mnist_anneal")["rows"],
                                 _load("lenet300_mnist")["rows"]))


def lenet5(folder: str = "lenet5_mnist") -> str:
    mod = _script("lenet5_mnist")
    return protocol.report_text(_load(folder), mod.REFERENCE, {})


def lenet5anneal() -> str:
    return lenet5("lenet5_mnist_anneal")


def lenet5_anneal_vs_early_stop() -> str:
    """LeNet-5's annealed rows matched with its committed early_stop run."""
    mod = _script("compare_schedules")
    return mod.table(mod.matched(_load("lenet5_mnist_anneal")["rows"],
                                 _load("lenet5_mnist")["rows"]))


# --- reconstruction, sweep, ViT ---------------------------------------------------------------

def reconstruct_lenet300() -> str:
    return _script("reconstruct_mnist").format_table(_load("reconstruct_mnist"))


def reconstruct_lenet5() -> str:
    return _script("reconstruct_mnist").format_table(_load("reconstruct_lenet5"))


def sweep() -> str:
    return _script("coreset_sweep").format_table(_load("coreset_sweep"))


def vit() -> str:
    return _script("vit_mnist").format_table(_load("vit_mnist"))


def lm_pystdlib() -> str:
    """The byte-LM table and sentences (``lm_pystdlib.py``'s ``report_text``), or a line saying
    that no results file is committed yet."""
    if not (RESULTS / "lm_pystdlib" / "results.json").exists():
        return ("No results file is committed yet (`experiments/results/lm_pystdlib/"
                "results.json`): the command above makes it, and "
                "`python experiments/readme_report.py --write` then fills this block.")
    return _script("lm_pystdlib").report_text(_load("lm_pystdlib"))


# --- Frank-Wolfe study (frank_wolfe_mnist.py) -------------------------------------------------

FW_METHODS = ("dense", "magnitude", "fw", "fw_momentum", "fw_mom_struct")
FW_LABELS = {"dense": "dense", "magnitude": "magnitude", "fw": "FW",
             "fw_momentum": "FW + momentum", "fw_mom_struct": "FW + momentum, structured"}


def _fw_values(doc: dict, method: str, key: str, budget: int) -> list[float]:
    return [r["methods"][method][key] for r in doc["runs"] if r["budget"] == budget
            and r["methods"][method].get(key) is not None]


def _span(values, fmt="{:.1f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else \
        f"{fmt.format(lo)}–{fmt.format(hi)}"


def frank_wolfe() -> str:
    """The compact table (test accuracy, mean ± sample sd over seeds) and the paper's claims
    checked against it, every number computed from ``frank_wolfe_mnist/results.json``."""
    doc = _load("frank_wolfe_mnist")
    budgets = sorted({r["budget"] for r in doc["runs"]})
    seeds = len({r["seed"] for r in doc["runs"]})
    acc = {m: {b: 100 * np.asarray(_fw_values(doc, m, "acc", b)) for b in budgets}
           for m in FW_METHODS}
    mean = {m: {b: float(acc[m][b].mean()) for b in budgets} for m in FW_METHODS}

    def at(method, key, b, scale=100.0):
        return scale * float(np.mean(_fw_values(doc, method, key, b)))

    lines = ["| pre-train epochs | " + " | ".join(FW_LABELS[m] for m in FW_METHODS) + " |",
             "|" + "---|" * (len(FW_METHODS) + 1)]
    for b in budgets:
        lines.append(f"| {b} | " + " | ".join(report.pm(acc[m][b]) for m in FW_METHODS) + " |")
    latency = {m: float(np.mean([at(m, "latency", b, 1) / at("dense", "latency", b, 1)
                                 for b in budgets])) for m in FW_METHODS}
    lines.append("| latency / dense (mean over budgets) | "
                 + " | ".join(f"{latency[m]:.2f}×" for m in FW_METHODS) + " |")
    masked = ("magnitude", "fw", "fw_momentum")
    pruned = masked + ("fw_mom_struct",)
    # 1. more accurate than dense and the baselines?
    above_dense = {m: [b for b in budgets if mean[m][b] > mean["dense"][b]] for m in pruned}
    fwm_best = [b for b in budgets if mean["fw_momentum"][b] > max(
        mean["magnitude"][b], mean["fw"][b])]
    gaps = [mean["dense"][b] - mean[m][b] for m in masked for b in budgets]
    verdict1 = ("**not reproduced**" if not above_dense["fw_momentum"] and not fwm_best else
                "**partly reproduced**")
    least = [b for b in budgets if mean["fw_momentum"][b] < min(mean[m][b] for m in masked
                                                                 if m != "fw_momentum")]
    c1 = (f"- *FW with momentum is more accurate than the dense model and the simple "
          f"baselines* — {verdict1}. FW + momentum is above the dense network at "
          f"{len(above_dense['fw_momentum'])} of {len(budgets)} budgets and above both magnitude "
          f"and FW at {len(fwm_best)}; the masked networks are {min(gaps):.2f}–{max(gaps):.2f} "
          f"points below the dense one. Of the three masked methods FW + momentum is the least "
          f"accurate at {len(least)} of {len(budgets)} budgets ("
          + "; ".join(f"{FW_LABELS[m]} {_span([mean[m][b] for b in budgets], '{:.2f}')} %"
                      for m in masked) + ").")
    # 2. sparser?
    it = {m: [at(m, "iterate_sparsity", b) for b in budgets] for m in ("fw", "fw_momentum")}
    mass = {m: [at(m, "mass_removed", b) for b in budgets] for m in ("fw", "fw_momentum")}
    mask_acc = {m: [at(m, "acc_at_mask", b) for b in budgets] for m in masked}
    ahead = [b for i, b in enumerate(budgets)
             if mask_acc["fw_momentum"][i] > max(mask_acc["magnitude"][i], mask_acc["fw"][i])]
    behind = [b for b in budgets if b not in ahead]
    after_ahead = [b for b in budgets if mean["fw_momentum"][b] > mean["fw"][b]]
    c2 = (f"- *FW with momentum is sparser* — **holds for the iterate, before the mask**: "
          f"{_span(it['fw_momentum'], '{:.0f}')} % of its kernel entries are ≈ 0 "
          f"(|θ| ≤ 1e-3·max) vs {_span(it['fw'], '{:.0f}')} % for plain FW, and the hard mask "
          f"removes {_span(mass['fw_momentum'], '{:.0f}')} % of its ℓ1 mass vs "
          f"{_span(mass['fw'], '{:.0f}')} %. Right after the mask it is the most accurate of the "
          f"three masked methods at {len(ahead)} of {len(budgets)} budgets"
          + (f" (not at {', '.join(map(str, behind))})" if behind else "")
          + f": {_span(mask_acc['fw_momentum'], '{:.0f}')} % vs "
          f"{_span(mask_acc['fw'], '{:.0f}')} % for FW and "
          f"{_span(mask_acc['magnitude'], '{:.0f}')} % for magnitude. After the fine-tune epoch "
          f"it is above FW at {len(after_ahead)} of {len(budgets)} budgets.")
    # 3. short pre-training
    fw_up = [b for b in budgets if round(mean["fw"][b], 2) > round(mean["magnitude"][b], 2)]
    tie = [b for b in budgets if round(mean["fw"][b], 2) == round(mean["magnitude"][b], 2)]
    mag_up = [b for b in budgets if b not in fw_up and b not in tie]
    c3 = (f"- *FW helps when pre-training is short* — FW's mean is above magnitude pruning's "
          f"after {', '.join(map(str, fw_up)) or 'no'} epoch(s) of pre-training"
          + (f", equal after {', '.join(map(str, tie))}" if tie else "")
          + (f", below after {', '.join(map(str, mag_up))}" if mag_up else "")
          + f" (means over {seeds} seeds, no interval: "
          + "; ".join(f"{b}: {mean['fw'][b]:.2f} vs {mean['magnitude'][b]:.2f} %"
                      for b in budgets[:2]) + ").")
    # 4. full pre-training not needed
    first, last = budgets[0], budgets[-1]
    delta = {m: mean[m][first] - mean[m][last] for m in pruned}
    worst = min(delta, key=delta.get)
    c4 = (f"- *Full pre-training is not needed* — **holds** in that no method loses more than "
          f"{max(0.0, -delta[worst]):.2f} points ({FW_LABELS[worst]}) with the shorter "
          f"pre-training: pruned accuracy after {first} epoch of pre-training minus after "
          f"{last}: " + ", ".join(f"{FW_LABELS[m]} {delta[m]:+.2f}" for m in pruned)
          + " points.")
    # 5. overhead, and the structured variant's collapses
    struct_sparsity = np.mean([at("fw_mom_struct", "kernel_sparsity", b) for b in budgets])
    collapsed = {b: float(acc["fw_mom_struct"][b].min()) for b in budgets
                 if acc["fw_mom_struct"][b].min() < 90.0}
    c5 = ("- *Minimal inference-time overhead* — **holds trivially**: masked networks keep "
          "dense shapes, so they run at the dense speed ("
          + " / ".join(f"{latency[m]:.2f}×" for m in masked)
          + f"); only the structured variant is smaller ({struct_sparsity:.1f} % of the kernel "
          f"parameters removed, {latency['fw_mom_struct']:.2f}× the dense latency on this CPU at "
          f"batch {doc['args']['latency_batch']}).")
    if collapsed:
        c5 += (" It is also the least stable: one seed fell below 90 % at budget(s) "
               + ", ".join(f"{b} ({v:.2f} %)" for b, v in collapsed.items()) + ".")
    return ("\n".join(lines) + f"\n\nTest accuracy %, mean ± sample sd (n − 1) over {seeds} "
            f"seeds; wall time of the run {_minutes(doc['wall_time_s'])} "
            f"(`wall_time_s` in results.json).\n\nWhat the paper claims (abstract) and what we "
            f"see:\n\n" + "\n".join((c1, c2, c3, c4, c5)))


# --- the bounds laboratory (bounds_report.py) -------------------------------------------------

PAPER_CASES = ("easy", "moderate", "difficult")   # the bounds paper's own cases


def bounds_figures() -> str:
    """What the bounds run reproduces and where it differs, every figure from
    ``bounds/results.json`` (and the paper's, from ``bounds_lab.report``)."""
    from experiments.bounds_lab import report as lab  # lazy: only the bounds blocks need it

    doc = lab.unjson(_load("bounds"))
    card = lab.card_rows(doc)

    def rows(method, paper_cases_only=False):
        return [(r, row) for r, row in card if r["method"] == method and (
            not paper_cases_only or lab.case_label(r["network"]) in PAPER_CASES)]

    randomized = rows("sipp_rand") + rows("mussay")
    vacuous = sum(row["vacuous"] for _, row in randomized)
    core = rows("coreset")
    unbounded = sum(bool(r["info"].get("mu_unbounded")) for r, _ in core)
    kept = [100 * row["kept_correct"] for _, row in card]
    looseness = [row["epsilon"] / row["observed"][0] for _, row in rows("mussay", True)]
    paper_loose = [lab.PAPER_CARD["mussay", c][0] / lab.PAPER_CARD["mussay", c][1]
                   for c in PAPER_CASES]
    unreachable = sum("unreachable" in x for r in doc["analyses"] for x in r["sparsity_first"])
    gap = max(doc["finetune_gap"], key=lambda r: r["sparsity"])
    hid = doc["hidden_vs_output"]["neuron"]
    k = hid["bound_kind"]
    ph = lab.PAPER_HIDDEN["neuron"]
    alpha = doc["alpha_scaling"]
    t_dev = max(abs(a["t_ratio"] / a["alpha"] - 1) for a in alpha)
    other_dev = max(max(abs(a["sipp_ratio"] - 1), abs(a["coreset_ratio"] - 1)) for a in alpha)
    sipp = [row["samples"] for _, row in rows("sipp_rand", True)]
    paper_sipp = [lab.PAPER_CARD["sipp_rand", c][3] for c in PAPER_CASES]
    paper_obs = [lab.PAPER_CARD["sipp_rand", c][1] for c in PAPER_CASES]
    moderate = next(row for r, row in rows("mussay") if r["network"] == "moderate")
    size = core[0][1]["layer_size"]
    return (
        f"What we reproduce (run time {_minutes(doc['seconds'])}, `seconds` in results.json): "
        f"{vacuous} of the {len(randomized)} randomized bounds (SiPP randomized, Mussay) ask "
        f"for more samples than the layer has elements, and the main paper's Theorem 2.6 needs "
        f"infinitely many in {unbounded} of {len(core)} cases (all {size} neurons can be "
        f"switched off at once, so μ(P) = ∞ — the bounds paper never evaluated this method); "
        f"the bounds are loose (a {doc['args']['guarantee']:.0%} guarantee keeps "
        f"{min(kept):.1f}–{max(kept):.1f} % of correct labels; Mussay's observed additive error "
        f"is {min(looseness):.0f}–{max(looseness):.0f}× below ε on the paper's three cases, the "
        f"paper's {min(paper_loose):.0f}–{max(paper_loose):.0f}×); sparsity-first stops with "
        f"\"unreachable\" ({unreachable} targets) instead of running forever; at "
        f"{100 * gap['sparsity']:.0f} % sparsity of the difficult net's final layer, fine-tuning "
        f"recovers {gap['accuracy_pruned']:.2f} → {gap['accuracy_finetuned']:.2f} accuracy "
        f"while the multiplicative logit error *grows* (median "
        f"{gap['error_pruned']['multiplicative_median']:.2f} → "
        f"{gap['error_finetuned']['multiplicative_median']:.2f}); logit-matching KD lowers the "
        f"output error (neurons: {hid['output_error_pruned'][k][0]:.1f} → "
        f"{hid['output_error_kd'][k][0]:.2f}, paper {ph[2]:.2f} → {ph[7]:.2f}) while the hidden "
        f"error does not fall ({hid['hidden_error_pruned'][k][0]:.1f} → "
        f"{hid['hidden_error_kd'][k][0]:.1f}, paper {ph[4]:.2f} → {ph[9]:.2f}); scaling W⁽¹⁾ "
        f"by α ∈ [{min(a['alpha'] for a in alpha):g}, {max(a['alpha'] for a in alpha):g}] "
        f"scales the Mussay total sensitivity by α (relative deviation at most {t_dev:.1e}) "
        f"with {100 * min(a['labels_unchanged'] for a in alpha):.0f} % of labels unchanged, and "
        f"leaves SiPP's and the coreset's totals unchanged (at most {other_dev:.1e} relative). "
        f"Different from the paper: randomized SiPP needs {lab.fmt_count(min(sipp))}–"
        f"{lab.fmt_count(max(sipp))} samples on the paper's three cases where the paper reports "
        f"{lab.fmt_count(min(paper_sipp))}–{lab.fmt_count(max(paper_sipp))} (both vacuous; our "
        f"Theorem A.1 is reconstructed from garbled text, see `jaxprune/bounds/`); our "
        f"multiplicative observed error (max over the 10 logits of |f̂−f|/|f|) is not far below "
        f"ε because it blows up at near-zero logits (the paper does not say how it measured "
        f"{min(paper_obs):.2f}–{max(paper_obs):.2f}); the moderate case's Mussay sparsity is "
        f"{100 * moderate['sparsity']:.0f} % (paper "
        f"{lab.PAPER_CARD['mussay', 'moderate'][4]:.0f} %).")


BOUNDS_ROWS = (("sipp_rand", "difficult"), ("sipp_det", "difficult"),
               ("sipp_det", "easy_weight"), ("mussay", "difficult"), ("mussay", "easy_neuron"),
               ("coreset", "difficult"))
BOUNDS_LABELS = {"sipp_rand": "SiPP randomized (Thm A.1)",
                 "sipp_det": "SiPP deterministic (Thm A.2)",
                 "mussay": "Mussay neurons (Thm A.4)",
                 "coreset": "coreset (main paper, Thm 2.6)"}


def bounds_card() -> str:
    """Epsilon-first rows of the report card (the guarantee of ``--guarantee``), ours with the
    bounds paper's Figure 2 numbers in brackets where it has them."""
    from experiments.bounds_lab import report as lab  # lazy: only this block needs it

    doc = lab.unjson(_load("bounds"))
    rows = {(r["network"], r["method"]): (r, row) for r, row in lab.card_rows(doc)}
    lines = ["| prune type | case | required ε (paper) | samples required / layer size (paper) "
             "| sparsity % (paper) | accuracy dense → pruned |", "|---|---|---|---|---|---|"]
    for method, network in BOUNDS_ROWS:
        r, row = rows[network, method]
        paper = lab.PAPER_CARD.get((method, lab.case_label(network)))
        samples = f"{lab.fmt_count(row['samples'])} / {row['layer_size']:,}"
        if row["vacuous"]:
            samples += ", vacuous" + (": μ(P) = ∞" if r["info"].get("mu_unbounded") else "")
        lines.append(
            f"| {BOUNDS_LABELS[method]} | {lab.case_label(network)} | "
            f"{lab.fmt_eps(row['epsilon'])}" + (f" ({paper[0]:.2f})" if paper else "")
            + f" | {samples}" + (f" ({lab.fmt_count(paper[3])})" if paper else "")
            + f" | {100 * row['sparsity']:.2f}" + (f" ({paper[4]:.2f})" if paper else "")
            + f" | {r['dense_accuracy']:.4f} → {row['accuracy']:.4f} |")
    return "\n".join(lines) + (f"\n\nGuarantee: {doc['args']['guarantee']:.0%} of the correct "
                               "dev labels kept (Lemma 4.1).")


# --- benchmarks (experiments/results/bench/*.md, written by the bench_* scripts) --------------

BENCH = RESULTS / "bench"


def _table_end(lines: list[str], first: int) -> int:
    """The index after the Markdown table whose first row is ``lines[first]``."""
    return next((i for i in range(first, len(lines)) if not lines[i].startswith("|")),
                len(lines))


def _md_table(path: pathlib.Path, heading: str) -> str:
    """The first Markdown table after the first line of ``path`` that starts with
    ``heading``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("|"))
    return "\n".join(lines[first:_table_end(lines, first)])


def bench_prune() -> str:
    return _md_table(BENCH / "prune.md", "## Prune time")


def bench_vs_torch_pruning() -> str:
    """The medians table and the ratio lines of ``vs_torch_pruning.md``."""
    lines = (BENCH / "vs_torch_pruning.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| tool | import"))
    end = _table_end(lines, start)
    ratios = [line for line in lines[end:] if "/ Torch-Pruning (medians)" in line]
    return "\n".join(lines[start:end] + [""] + ratios)


def bench_peel() -> str:
    """Each model's peeling-kernel means over rounds (first / second call, seconds)."""
    kernels = ("map + fast", "vmap + fast", "map + optimised", "vmap + optimised")
    lines = ["| model | map + fast (CPU default) | vmap + fast | map + optimised | "
             "vmap + optimised |", "|---|---:|---:|---:|---:|"]
    model = None
    for line in (BENCH / "prune.md").read_text().splitlines():
        if line.startswith("## ") and ": peeling kernel" in line:
            model = line[3:].split(":", 1)[0]
        elif line.startswith("mean over rounds") and model:
            means = {}
            for part in line.split(": ", 1)[1].split(";"):   # "map + fast 8.08 / 0.12 s"
                name, first, _, second = part.strip().removesuffix(" s").rsplit(" ", 3)
                means[name] = f"{first} / {second}"
            lines.append(f"| {model} | " + " | ".join(means[k] for k in kernels) + " |")
            model = None
    return "\n".join(lines)


def bench_latency_lenet300() -> str:
    return _md_table(BENCH / "prune.md", "## Inference latency, lenet300")


def bench_latency_resnet50() -> str:
    return _md_table(BENCH / "prune.md", "## Inference latency, resnet50")


def bench_cache() -> str:
    return _md_table(BENCH / "cache.md", "# Persistent compilation cache")


def bench_targets() -> str:
    """The targets ``bench_prune.py`` and ``bench_cache.py`` printed, and the prune
    benchmark's wall time."""
    prune = (BENCH / "prune.md").read_text().splitlines()
    cache = (BENCH / "cache.md").read_text().splitlines()
    lines = [f"- {line}" for line in prune if line.startswith("Target:")]
    lines += [f"- Target: {line[2:].removeprefix('target ')}" for line in cache
              if line.startswith("- target")]
    lines += [f"- {line}" for line in prune if line.startswith("Total benchmark wall time")]
    return "\n".join(lines)


def _bench_whole(name: str):
    """The renderer of ``bench/<name>.md`` quoted whole."""
    def render() -> str:
        return (BENCH / f"{name}.md").read_text().strip("\n")
    render.__name__ = f"bench_{name}"
    return render


# the peaks per way and XLA's plan by depth; the steady-state PCA of ResNet-50's filter sets
bench_calibration_memory = _bench_whole("calibration_memory")
bench_pca = _bench_whole("pca")


def bench_round_to() -> str:
    table = _md_table(BENCH / "prune.md", "## vgg16: widths rounded")
    lines = (BENCH / "prune.md").read_text().splitlines()
    verdict = next(line for line in lines if line.startswith("round_to=8 / round_to=1"))
    return f"{table}\n\n{verdict}"


def _md_rows(path: pathlib.Path) -> dict[str, list[str]]:
    """``{first cell: the other cells}`` of every Markdown table row in ``path``."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


def _k(text: str) -> str:
    """``"112,806"`` -> ``"112.8k"``."""
    return f"{float(text.replace(',', '')) / 1000:.1f}k"


def bench_summary() -> str:
    """The training / processes / cache summary, from ``bench/training.md`` and ``cache.md``."""
    import re

    train = _md_rows(BENCH / "training.md")
    one, two = train["1 process x 1 device(s)"][-1], train["1 process x 2 device(s)"][-1]
    torch_label = next(k for k in train if k.startswith("PyTorch"))
    torch = train[torch_label][-1]
    procs = train[next(k for k in train if k.startswith("2 processes"))][-1]
    version = torch_label.split()[1].split("+")[0]
    diff = re.search(r"max \|difference\| of the final params: ([0-9.e+-]+)",
                     (BENCH / "training.md").read_text()).group(1)

    def ratio(a, b):
        return float(a.replace(",", "")) / float(b.replace(",", ""))

    cache = _md_rows(BENCH / "cache.md")
    models = [m for m in cache if m not in ("model",)]
    warm = [cache[m][3].strip("*").rstrip("×") for m in models]
    met = all(float(w) <= 0.5 for w in warm)
    return "\n".join([
        "| measurement (one run each) | result |", "|---|---|",
        f"| `train.fit` LeNet-300-100 on MNIST, steady epoch, 1 device, vs a plain PyTorch "
        f"{version} CPU loop (same MLP, Adam 1e-3, batch 128) | **{ratio(one, torch):.2f}×** "
        f"({_k(one)} vs {_k(torch)} examples/s) |",
        f"| 2 processes × 1 device (`jax.distributed`, gloo) vs 1 process × 2 devices, batch "
        f"128 | {ratio(procs, two):.2f}× ({_k(procs)} vs {_k(two)} examples/s); final params "
        f"{'identical' if float(diff) == 0 else 'differ'} (max diff {float(diff):g}) |",
        f"| fresh-process `prune`, warm vs cold persistent compilation cache: "
        f"{' / '.join(models)} | {' / '.join(w + '×' for w in warm)} "
        f"(`experiments/results/bench/cache.md`; target ≤ 0.5× "
        f"{'met for all' if met else 'not met for all'}) |"])


# --- the Status section's Table 1 summary ----------------------------------------------------

def _holm_counts(summary, method, key) -> int:
    return sum(1 for s in summary if s["method"] == method and s["vs_reference"] is not None
               and s["vs_reference"].get(key))


def status_table1() -> str:
    """What Table 1, its weak-baseline side row and the LeNet-5 run say after Holm's
    correction, in both families, written from their results files."""
    out = []
    for folder, name in (("lenet300_mnist_anneal", "Table 1 (LeNet-300-100)"),
                         ("lenet300_mnist", "Table 1 with the earlier early-stopped fine-tuning"),
                         ("lenet300_mnist_weak", "The weak-baseline side row"),
                         ("lenet5_mnist_anneal", "LeNet-5"),
                         ("lenet5_mnist", "LeNet-5 with the earlier early-stopped fine-tuning")):
        doc = _load(folder)
        summary = report.summarize(doc["rows"], "coreset")
        groups = len({(s["ratio"], s["finetune"]) for s in summary})
        total = sum(1 for s in summary if s["vs_reference"] is not None)
        methods = list(dict.fromkeys(s["method"] for s in summary if s["method"] != "coreset"))
        parts = []
        for m in methods:
            lower = [s for s in summary if s["method"] == m and s["vs_reference"] is not None]
            row = _holm_counts(summary, m, "holm")
            table = _holm_counts(summary, m, "holm_table")
            sign = {np.sign(s["vs_reference"]["mean"]) for s in lower
                    if s["vs_reference"].get("holm")}
            word = ("coreset lower" if sign == {-1.0} else "coreset higher" if sign == {1.0}
                    else "mixed signs" if sign else "")
            parts.append(f"{m} {row}/{table}" + (f" ({word})" if word else ""))
        out.append(f"- {name}, {total} comparisons with coreset over {groups} (ratio, recipe) "
                   f"cells: the cells where a difference survives Holm's correction within its "
                   f"ratio and recipe / over the whole table — " + ", ".join(parts) + ".")
    doc = _load("lenet300_mnist_anneal")
    mod = _script("lenet300_mnist")
    best = {r: min(x["err_after_ft"] for x in doc["rows"] if x["method"] == "coreset"
                   and x["ratio"] == r) for r in doc["config"]["ratios"]}
    out.append("- Coreset's best single net (either recipe) in Table 1 vs the paper's coreset: "
               + ", ".join(f"{100 * r:.1f} %: {best[r]:.2f} vs {mod.PAPER_ERR[str(r)]:.2f} %"
                           for r in best) + ".")
    return "\n".join(out)


def bench_export() -> str:
    """The latency table of ``export.md`` with its machine line and its ONNX versions line."""
    lines = (BENCH / "export.md").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = _table_end(lines, first)
    machine = next(line for line in lines[1:first] if line.strip())
    onnx = next((line for line in lines[end:] if line.startswith("ONNX")), "")
    return "\n".join(lines[first:end] + ["", machine + ("; " + onnx if onnx else "")])


# --- where each results page's numbers come from ---------------------------------------------

SOURCES = ("lenet300_mnist", "lenet300_mnist_anneal", "lenet300_mnist_uniform",
           "lenet300_mnist_weak", "lenet5_mnist", "lenet5_mnist_anneal",
           "reconstruct_mnist", "reconstruct_lenet5", "coreset_sweep", "vit_mnist",
           "frank_wolfe_mnist", "bounds")


def source(folder: str) -> str:
    """One line naming ``folder``'s results file, its plots, the hardware it records and the
    run's wall time where the file has it."""
    doc = _load(folder)
    where = RESULTS / folder
    plots = sorted(p.name for p in where.glob("*.png"))
    parts = [f"Results file: `experiments/results/{folder}/results.json`"]
    if plots:
        parts.append("plots: " + ", ".join(f"`{name}`" for name in plots))
    cpu = doc.get("cpu")
    parts.append(f"measured on: {cpu}" if cpu else
                 "hardware: not recorded in the results file")
    seconds = doc.get("wall_time_s", doc.get("seconds"))
    if seconds is not None:
        parts.append(f"wall time of the run: {_minutes(seconds)}")
    return "; ".join(parts) + "."


def _source_block(folder: str):
    def render() -> str:
        return source(folder)
    render.__name__ = f"source_{folder}"
    return render


# --- the short summary in the README and on the results index --------------------------------

def _holm_cells(folder: str) -> tuple[str, int]:
    """What survives Holm's correction over the whole table of a protocol run, per method, and
    the number of (ratio, recipe) cells."""
    summary = report.summarize(_load(folder)["rows"], "coreset")
    cells = len({(s["ratio"], s["finetune"]) for s in summary})
    lower, higher, none = [], [], []
    for m in dict.fromkeys(s["method"] for s in summary if s["method"] != "coreset"):
        diffs = [s["vs_reference"] for s in summary if s["method"] == m
                 and s["vs_reference"] is not None and s["vs_reference"].get("holm_table")]
        down = sum(d["mean"] < 0 for d in diffs)
        up = len(diffs) - down
        if down:
            lower.append(f"{m} ({down})")
        if up:
            higher.append(f"{m} ({up})")
        if not diffs:
            none.append(m)
    parts = []
    if lower:
        parts.append("coreset lower than " + ", ".join(lower))
    if higher:
        parts.append("higher than " + ", ".join(higher))
    if none:
        parts.append("no difference from " + ", ".join(none) + " in any cell")
    return "; ".join(parts), cells


def _line_after(text: str, prefix: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(prefix))


def _cell(text: str) -> str:
    """``text`` inside a Markdown table cell (its pipes escaped)."""
    return text.replace("|", "\\|")


def summary(pages: str = "docs/results/") -> str:
    """One row per experiment: what its committed results file says, in a few words; links
    go to ``pages`` + ``<page>.md``."""
    rows = ["| experiment | what the committed results say | page |", "|---|---|---|"]
    for folder, name, page in (
            ("lenet300_mnist_anneal", "Table 1: LeNet-300-100, MNIST", "table1"),
            ("lenet300_mnist", "Table 1, the earlier early-stopped fine-tuning", "table1"),
            ("lenet300_mnist_uniform", "Table 1, `uniform` allocation", "table1"),
            ("lenet300_mnist_weak", "Table 1 with weaker dense nets", "weak_baseline"),
            ("lenet5_mnist_anneal", "LeNet-5, MNIST", "lenet5"),
            ("lenet5_mnist", "LeNet-5, the earlier early-stopped fine-tuning", "lenet5")):
        text, cells = _holm_cells(folder)
        config = _load(folder)["config"]
        rows.append(f"| {name} ({config['dense_seeds']} nets, fine-tune schedule "
                    f"`{config.get('ft_schedule', 'early_stop')}`) | cells (of {cells}) where a "
                    f"difference survives Holm's correction over the whole table: {text} | "
                    f"[{page}]({pages}{page}.md) |")
    rows.append("| Table 1, annealed vs early-stopped fine-tuning (the same nets and prunes) | "
                + anneal_vs_early_stop().splitlines()[-1]
                + f" | [table1]({pages}table1.md) |")
    rows.append("| LeNet-5, annealed vs early-stopped fine-tuning (the same nets and prunes) | "
                + lenet5_anneal_vs_early_stop().splitlines()[-1]
                + f" | [lenet5]({pages}lenet5.md) |")
    for folder, name, page in (("reconstruct_mnist", "Least-squares refit, LeNet-300-100",
                                "reconstruction"),
                               ("reconstruct_lenet5", "Least-squares refit, LeNet-5",
                                "reconstruction")):
        line = _line_after(_script("reconstruct_mnist").format_table(_load(folder)),
                           "- Whole table")
        rows.append(f"| {name} | {_cell(line[2:])} | [{page}]({pages}{page}.md) |")
    sweep_text = sweep()
    rows.append("| Coreset defaults (validation sweep) | "
                + _line_after(sweep_text, "Lowest mean").split(". ")[1].rstrip(".")
                + f" | [coreset_sweep]({pages}coreset_sweep.md) |")
    if (RESULTS / "lm_pystdlib" / "results.json").exists():
        lm, lm_doc = _script("lm_pystdlib"), _load("lm_pystdlib")
        lm_text = lm.sentences(lm.summarize(lm_doc["rows"]))
        rows.append(f"| Byte LMs on pystdlib, width and depth ({lm_doc['config']['nets']} "
                    f"nets) | {_cell(lm_text)} | [language_models]({pages}language_models.md) |")
    vit_doc = _load("vit_mnist")
    accs = {}
    for row in vit_doc["rows"]:
        accs.setdefault(row["method"], []).append(row["acc_after_ft"])
    rows.append("| ViT heads and MLP units (1 net) | test accuracy after one fine-tune epoch: "
                + ", ".join(f"{m} {np.mean(v):.2f} %" for m, v in accs.items())
                + f"; dense {vit_doc['dense_acc']:.2f} % | [vit]({pages}vit.md) |")
    claims = []
    for line in frank_wolfe().splitlines():
        if line.startswith("- *") and "* — **" in line:     # the claims with a verdict
            claim, rest = line[3:].split("* — **", 1)
            claims.append(f"{claim}: {rest.split('**', 1)[0]}")
    rows.append("| Frank-Wolfe pruning study (LeNet-5) | the paper's claims — " + "; ".join(claims)
                + f" | [frank_wolfe]({pages}frank_wolfe.md) |")
    rows.append("| Bounds laboratory | "
                + _cell(bounds_figures().split(": ", 1)[1].split(" — ", 1)[0]) + ")"
                + f" | [bounds]({pages}bounds.md) |")
    targets = [line for line in bench_targets().splitlines() if line.startswith("- Target")]
    met = sum(": MET" in line for line in targets)
    rows.append(f"| Benchmarks (prune time, cache) | {met} of {len(targets)} speed targets met "
                f"| [benchmarks]({pages}benchmarks.md) |")
    return "\n".join(rows)


BLOCKS = {
    "table1": table1, "table1weak": table1weak, "reconstruct_lenet300": reconstruct_lenet300,
    "reconstruct_lenet5": reconstruct_lenet5, "vit": vit, "frank_wolfe": frank_wolfe,
    "bounds_figures": bounds_figures, "bounds_card": bounds_card, "lenet5": lenet5, "sweep": sweep,
    "status_table1": status_table1, "bench_prune": bench_prune, "bench_peel": bench_peel,
    "bench_latency_lenet300": bench_latency_lenet300,
    "bench_latency_resnet50": bench_latency_resnet50, "bench_cache": bench_cache,
    "bench_summary": bench_summary, "bench_targets": bench_targets,
    "bench_round_to": bench_round_to, "bench_vs_torch_pruning": bench_vs_torch_pruning,
    "bench_export": bench_export, "bench_calibration_memory": bench_calibration_memory,
    "bench_pca": bench_pca,
    "summary": summary, "lm_pystdlib": lm_pystdlib,
    "table1anneal": table1anneal, "anneal_vs_early_stop": anneal_vs_early_stop,
    "table1uniform": table1uniform, "lenet5anneal": lenet5anneal,
    "lenet5_anneal_vs_early_stop": lenet5_anneal_vs_early_stop,
    "summary_docs": lambda: summary(pages=""),
    **{f"source_{folder}": _source_block(folder) for folder in SOURCES},
}


def _fw_table() -> str:
    fw = _script("frank_wolfe_mnist")
    return fw.tables(fw.summarize(_load("frank_wolfe_mnist")))


# each experiment's committed table.md, as its script writes it from results.json
TABLE_FILES = {
    "lenet300_mnist": table1, "lenet300_mnist_weak": table1weak, "lenet5_mnist": lenet5,
    "lenet300_mnist_anneal": table1anneal, "lenet300_mnist_uniform": table1uniform,
    "lenet5_mnist_anneal": lenet5anneal, "reconstruct_mnist": reconstruct_lenet300,
    "reconstruct_lenet5": reconstruct_lenet5,
    "coreset_sweep": sweep, "vit_mnist": vit, "frank_wolfe_mnist": _fw_table,
}
if (RESULTS / "lm_pystdlib" / "results.json").exists():
    TABLE_FILES["lm_pystdlib"] = lm_pystdlib


def table_drift() -> list[str]:
    """The results folders whose committed ``table.md`` differs from what their script's
    report function makes from the committed ``results.json``."""
    return [folder for folder, render in TABLE_FILES.items()
            if render().strip("\n") != (RESULTS / folder / "table.md").read_text().strip("\n")]


def command(name: str) -> str:
    """The command written into block ``name``'s begin marker."""
    return f"python experiments/readme_report.py --write --block {name}"


def files() -> list[pathlib.Path]:
    """The README and every Markdown page of the documentation (build output excluded)."""
    pages = sorted(p for p in DOCS.rglob("*.md")
                   if not any(part.startswith("_") for part in p.relative_to(DOCS).parts))
    return [README] + pages


def _label(path: pathlib.Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def locations(paths=None) -> dict[str, list[pathlib.Path]]:
    """``{block: the files that hold it}`` for every block found in ``paths`` (default
    :func:`files`), renderer or not."""
    out: dict[str, list[pathlib.Path]] = {}
    for path in files() if paths is None else paths:
        for line in path.read_text().splitlines():
            if line.startswith("<!-- generated "):
                out.setdefault(line.split("generated ", 1)[1].split(":", 1)[0], []).append(path)
    return out


def drift(paths=None, names=None) -> dict[str, str]:
    """``{"file (block)": unified diff}`` for every copy of a block in ``paths`` (a file or a
    list of files; default :func:`files`) whose text differs from what its renderer makes now.
    A block of ``names`` (default every renderer) that none of the files holds counts as a
    difference."""
    if isinstance(paths, (str, pathlib.Path)):
        paths = [pathlib.Path(paths)]
    paths = files() if paths is None else list(paths)
    found = locations(paths)
    out = {}
    for name in BLOCKS if names is None else names:
        if name not in found:
            out[name] = (f"no generated block {name!r} in "
                         + ", ".join(_label(p) for p in paths))
            continue
        want = BLOCKS[name]().strip("\n")
        for path in dict.fromkeys(found[name]):
            have = report.read_block(path.read_text(), name)
            if have != want:
                out[f"{_label(path)} ({name})"] = "\n".join(difflib.unified_diff(
                    (have or "").splitlines(), want.splitlines(), f"{_label(path)} ({name})",
                    command(name), lineterm=""))
    return out


def write(paths=None, names=None) -> list[str]:
    """Rewrite every copy of the blocks ``names`` (default every block the files hold) in
    ``paths`` (default :func:`files`); the ``file (block)`` labels written."""
    found = locations(files() if paths is None else paths)
    done = []
    for name in [n for n in BLOCKS if n in found] if names is None else names:
        if name not in found:
            raise SystemExit(f"no file holds a generated block {name!r}")
        text = BLOCKS[name]()
        for path in dict.fromkeys(found[name]):
            report.write_block(path, name, text)
            done.append(f"{_label(path)} ({name})")
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", action="append", default=None,
                   help="only this file (repeatable); default the README and docs/**/*.md")
    p.add_argument("--block", action="append", choices=sorted(BLOCKS),
                   help="only this block (repeatable); default every block")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report drift, exit 1 on any")
    mode.add_argument("--write", action="store_true", help="rewrite the blocks")
    args = p.parse_args(argv)
    paths = None if args.file is None else [pathlib.Path(f) for f in args.file]
    if args.write:
        for label in write(paths, args.block):
            print(f"wrote {label}")
        return 0
    found = drift(paths, args.block)
    for diff in found.values():
        print(diff)
    stale = [] if args.block else table_drift()
    for folder in stale:
        print(f"experiments/results/{folder}/table.md differs from its results.json: rerun the "
              "script with --report-only")
    return 1 if found or stale else 0


if __name__ == "__main__":
    sys.exit(main())
