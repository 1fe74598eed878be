"""The four figures of the bounds report (matplotlib, Agg), drawn from the ``result``
dictionary of the experiment."""
from __future__ import annotations

import math

import numpy as np

from experiments.bounds_lab.samplers import KIND, METHOD_LABEL, METHODS

__all__ = ["plot_guarantee", "plot_sparsity_first", "plot_finetune", "plot_alpha"]


def _plt():
    """matplotlib's pyplot on the Agg backend (the ``[plots]`` extra)."""
    try:
        import matplotlib  # lazy: the [plots] extra
    except ModuleNotFoundError:
        raise ModuleNotFoundError("drawing the bounds figures needs matplotlib: "
                                  "pip install 'jaxprune[plots]'", name="matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_guarantee(result, path):
    """Figure 6: per method, ε required vs observed, samples vs layer size, sparsity and
    accuracy, against the accuracy guarantee."""
    plt = _plt()
    fig, axes = plt.subplots(len(METHODS), 3, figsize=(13, 3.0 * len(METHODS)), squeeze=False)
    for i, method in enumerate(METHODS):
        runs = [r for r in result["analyses"] if r["method"] == method]
        for r in runs:
            fr = [x["fraction"] for x in r["epsilon_first"]]
            eps = np.array([x["epsilon"] for x in r["epsilon_first"]])
            obs = np.array([_nan(x["observed"][0]) for x in r["epsilon_first"]], float)
            med = np.array([_nan(x["observed_median"]) for x in r["epsilon_first"]], float)
            line = axes[i, 0].plot(fr, eps, marker="o", label=f"{r['network']} ε")[0]
            axes[i, 0].plot(fr, obs, ls="--", marker="x", color=line.get_color(),
                            label=f"{r['network']} observed mean")
            axes[i, 0].plot(fr, med, ls=":", marker="+", color=line.get_color(),
                            label=f"{r['network']} observed median")
            sam = np.array([x["samples"] for x in r["epsilon_first"]], float)
            sam = np.where(np.isfinite(sam), sam, np.nan)
            axes[i, 1].plot(fr, sam, marker="o", color=line.get_color(), label=r["network"])
            axes[i, 2].plot(fr, [100 * x["sparsity"] for x in r["epsilon_first"]], marker="o",
                            color=line.get_color(), label=f"{r['network']} sparsity")
            axes[i, 2].plot(fr, [100 * x["accuracy"] for x in r["epsilon_first"]], ls="--",
                            marker="x", color=line.get_color(), label=f"{r['network']} acc")
        if runs:
            size = runs[0]["epsilon_first"][0]["layer_size"]
            axes[i, 1].axhline(size, color="k", lw=0.8, ls=":", label="layer size")
            if not any(np.isfinite(x["samples"]) for r in runs for x in r["epsilon_first"]):
                axes[i, 1].text(0.5, 0.6, "m = ∞ for every guarantee\n(μ(P) = ∞): vacuous",
                                transform=axes[i, 1].transAxes, ha="center")
                axes[i, 1].set_xlim(0, 1)
        axes[i, 0].set_yscale("log")
        if any(np.isfinite(x["samples"]) for r in runs for x in r["epsilon_first"]):
            axes[i, 1].set_yscale("log")
        axes[i, 0].set_ylabel(f"{METHOD_LABEL[method]}\nε ({KIND[method]})", fontsize=8)
        axes[i, 1].set_ylabel("samples required")
        axes[i, 2].set_ylabel("%")
        for ax in axes[i]:
            ax.set_xlabel("guaranteed fraction of correct labels")
            ax.legend(fontsize=5, ncol=2)
    fig.suptitle("Accuracy guarantee vs required ε and observed error (max over logits), "
                 "samples required, sparsity and accuracy (bounds paper Fig. 6)")
    _save(plt, fig, path)


def _nan(x):
    return math.nan if x is None else x


def plot_sparsity_first(result, path):
    plt = _plt()
    fig, axes = plt.subplots(1, len(METHODS), figsize=(4 * len(METHODS), 3.4), squeeze=False)
    for i, method in enumerate(METHODS):
        ax = axes[0, i]
        for r in (r for r in result["analyses"] if r["method"] == method):
            ok = [x for x in r["sparsity_first"] if "unreachable" not in x]
            bad = [x for x in r["sparsity_first"] if "unreachable" in x]
            if ok:
                line = ax.plot([x["sparsity"] for x in ok], [x["accuracy"] for x in ok],
                               marker="o", label=f"{r['network']} acc")[0]
                ax.plot([x["sparsity"] for x in ok], [x["guaranteed_fraction"] * r[
                    "dense_accuracy"] for x in ok], ls="--", marker="x",
                    color=line.get_color(), label=f"{r['network']} guaranteed")
            for x in bad:
                ax.axvline(x["target_sparsity"], color="r", lw=0.6, ls=":")
        ax.set_title(METHOD_LABEL[method], fontsize=8)
        ax.set_xlabel("sparsity (red: unreachable targets)")
        ax.set_ylabel("dev accuracy")
        ax.legend(fontsize=6)
    fig.suptitle("Sparsity-first: accuracy vs implied guarantee (bounds paper Fig. 8)")
    _save(plt, fig, path)


def plot_finetune(result, path):
    plt = _plt()
    rows = result["finetune_gap"]
    sp = [r["sparsity"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for key, lab, mk in (("accuracy_pruned", "after pruning", "o"),
                         ("guaranteed_accuracy", "guaranteed (Lemma 4.1)", "v"),
                         ("accuracy_finetuned", "after fine-tuning", "s"),
                         ("accuracy_kd", "after logit KD", "x")):
        axes[0].plot(sp, [r[key] for r in rows], marker=mk, label=lab)
    for tag, lab in (("pruned", "after pruning"), ("finetuned", "after fine-tuning"),
                     ("kd", "after logit KD")):
        m = [r[f"error_{tag}"]["additive"][0] for r in rows]
        s = [r[f"error_{tag}"]["additive"][1] for r in rows]
        axes[1].errorbar(sp, m, yerr=s, marker="o", capsize=2, label=lab)
        axes[2].plot(sp, [r[f"error_{tag}"]["multiplicative_median"] for r in rows],
                     marker="o", label=f"{lab} (median)")
        axes[2].plot(sp, [r[f"error_{tag}"]["multiplicative"][0] for r in rows], ls="--",
                     marker="x", color=axes[2].lines[-1].get_color(), label=f"{lab} (mean)")
    axes[0].set_xlabel("sparsity")
    axes[0].set_ylabel("dev accuracy")
    axes[1].set_xlabel("sparsity")
    axes[1].set_ylabel("additive logit error (max over logits)")
    axes[2].set_xlabel("sparsity")
    axes[2].set_ylabel("multiplicative logit error (max over logits)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("Fine-tuning gap, difficult LeNet-300-100, deterministic SiPP (Fig. 3)")
    _save(plt, fig, path)


def plot_alpha(result, path):
    plt = _plt()
    rows = result["alpha_scaling"]
    a = [r["alpha"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(a, [r["t_ratio"] for r in rows], marker="o", label="t(α)/t(1)  (Mussay)")
    ax.loglog(a, [r["epsilon_additive_ratio"] for r in rows], marker="s", ls="--",
              label="ε_add(α)/ε_add(1)")
    ax.loglog(a, [r["samples_ratio"] for r in rows], marker="^", label="samples(α)/samples(1)")
    ax.loglog(a, a, color="k", lw=0.6, ls=":", label="α")
    ax.set_xlabel("α")
    ax.legend(fontsize=7)
    ax.set_title("Lemma C.1 / Corollary C.2 (bounds paper Fig. 12)")
    _save(plt, fig, path)
