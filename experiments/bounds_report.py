"""When are pruning approximation bounds useful? — the bounds paper's LeNet-300-100 experiments
on real MNIST (issue 7; DESIGN §5; ``../shared/papers/when-are-pruning-bounds-useful.txt``).

    python experiments/bounds_report.py --quick            # minutes: a slice of MNIST, 1 epoch
    python experiments/bounds_report.py --out DIR          # the full run (all of MNIST)

1. **Training cases** (paper §4.2, App. B.1), LeNet-300-100, SGD (lr 0.1, momentum 0.5,
   batch 100, as the paper; cosine decay by default so the last epoch is stable):
   ``difficult`` no regularisation; ``moderate`` L1 (``--l1``; ``jaxprune.train``'s ``l1``
   adds ``l1·Σ|kernel|`` — a *sum* over every kernel entry — to the batch-mean CE);
   ``easy_weight`` the difficult net with the final weight matrix magnitude-pruned to
   ``--easy-weight-sparsity`` and re-trained with the pruned entries held at zero;
   ``easy_neuron`` the difficult net trained with hard-concrete L0 gates on the 100 neurons
   of the last hidden layer (``jaxprune.gates``, Louizos et al. 2018), the gates most likely
   off pruned (``--easy-neuron-sparsity``), re-trained with them held at zero;
   ``dropout<p>`` (``--dropout p ...``) no regularisation but dropout ``p``.
2. **Pruning the final layer** of each case, guaranteeing ``--guarantee`` of the correct dev
   labels (Lemma 4.1 → ε, :func:`jaxprune.bounds.epsilon_for_guarantee`), epsilon-first:
   ``sipp_rand`` (Thm A.1) and ``sipp_det`` (Thm A.2) on the weights of the 100→10 layer
   (bias embedded as a weight on a constant input, Appendix A.1; positive and negative weights
   of every output perceptron sparsified separately, Lemma 6 of Baykal et al.), ``mussay``
   (Thm A.4) and ``coreset`` (main paper, Thm 2.6; sensitivities of ``jaxprune.methods.coreset``
   on the points ``[W_j | b_j]``) on its 100 input neurons.  Also sparsity-first at fixed
   sparsities (§3.3; the unreachable case is reported, not looped on).
3. **Fine-tuning gap** (Figure 3): the difficult net's final layer pruned sparsity-first with
   deterministic SiPP, then fine-tuned (CE) or distilled by logit matching (KD).
4. **Hidden vs output error** (§5.2): the *first* layer of the difficult net pruned (Mussay
   neurons, 90 %; deterministic SiPP weights, 95 %), errors at the hidden layer and at the
   logits before and after logit-matching KD.
5. **α-scaling** (Lemma C.1, Corollary C.2): ``W⁽¹⁾ → αW⁽¹⁾`` of the last two layers.

Conventions (each a choice the paper leaves open; all in the JSON):

* SiPP sensitivities come from ``|S| = ⌈K'·log(2ρ/δ)⌉`` training images (Theorem A.1; 25 for
  this layer); a weight whose input is 0 on all of ``S`` has ``s_j = 0`` and is never drawn.
  ε is applied to each signed part (as the paper's implementation): ``|ẑ± − z±| ≤ ε z±``
  bounds ``|f̂ − f|`` by ``ε(z⁺ + z⁻)``, which is ``ε|f|`` only when the parts do not cancel.
* Epsilon-first draws ``m`` i.i.d. elements ∝ ``s`` as multinomial counts (numpy,
  vectorised over guarantees and parts): the distribution of
  :func:`jaxprune.bounds.epsilon_first`, at ``O(n)`` cost for any ``m`` (bounds here reach
  10⁹ samples and more), re-weighted by ``count/(m q)``.
* Theorem A.4 as stated allows ``s_j ≤ 0``; the sampling uses ``max_i |w⁽²⁾_ij|`` (Alg. 3).
  ``β`` = ``max ‖(x, 1)‖`` over the training inputs of the layer (measured, as the paper).
* Theorem 2.6 needs μ(P) of the layer's points; 100 linearly independent points in 300 dims
  can all be switched off at once, so μ(P) = ∞ (certified by an LP) and ``m = ∞``: the row is
  then the ``m → ∞`` limit network (every σ_j > 0 kept with weight 1), marked as such.
* Observed error of an example = the max over units of ``|f̂ − f|`` (additive) or
  ``|f̂ − f|/|f|`` (multiplicative) — the smallest ε for which the element-wise guarantee holds
  on it; mean±std and median over dev examples; the mean over units is reported beside it.

The dev set is MNIST's test split (10,000 images).  Every hyper-parameter is a flag.
Writes ``results.json``, ``report.md`` and four PNGs (``accuracy_vs_guarantee.png`` = Fig. 6,
``sparsity_first.png`` = Fig. 8, ``finetune_gap.png`` = Fig. 3, ``alpha_scaling.png`` =
Fig. 12) under ``--out``.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune import bounds as B
from jaxprune import checkpoint, data, gates, train
from jaxprune.methods import LayerView
from jaxprune.methods import coreset as coreset_method
from jaxprune.models import LeNet300100

METHODS = ("sipp_rand", "sipp_det", "mussay", "coreset")
METHOD_LABEL = {"sipp_rand": "Wt Rnd (SiPP, Thm A.1)", "sipp_det": "Wt Det (SiPP, Thm A.2)",
                "mussay": "Neuron (Mussay, Thm A.4)", "coreset": "Neuron (coreset, Thm 2.6)"}
KIND = {"sipp_rand": "multiplicative", "sipp_det": "multiplicative", "mussay": "additive",
        "coreset": "multiplicative"}
WEIGHT_METHODS = ("sipp_rand", "sipp_det")
MAX_DRAW = 1e15      # larger (or infinite) sample sizes are evaluated as their m → ∞ limit

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


# =========================================================================== arguments

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--quick", action="store_true",
      help="smoke-test mode: a slice of MNIST, 1 epoch everywhere, few fractions/sparsities")
    a("--out", default="experiments/results/bounds", help="output folder")
    a("--data-dir", default=None, help="folder holding mnist/ (default $JAXPRUNE_DATA_DIR)")
    a("--dataset", default="mnist")
    a("--cache-dir", default=None,
      help="save/restore the trained cases here (skips re-training on a re-run)")
    a("--seed", type=int, default=0)
    a("--devices", type=int, default=1, help="devices for jaxprune.train.fit")
    a("--limit-train", type=int, default=None, help="use the first N training images")
    a("--limit-dev", type=int, default=None, help="use the first N dev (test-split) images")
    # --- training cases
    a("--epochs", type=int, default=None, help="epochs of every from-scratch case (15; quick 1)")
    a("--lr", type=float, default=0.1)
    a("--momentum", type=float, default=0.5)
    a("--batch-size", type=int, default=100)
    a("--schedule", default="cosine", choices=("constant", "cosine", "step"))
    a("--l1", type=float, default=1e-4,
      help="moderate case: l1·Σ|kernel| (sum over all kernels) added to the batch-mean CE")
    a("--dropout", type=float, nargs="*", default=[], help="extra dropout cases, e.g. 0.2 0.5")
    a("--min-accuracy", type=float, default=0.98, help="warn when a case is below this")
    a("--easy-weight-sparsity", type=float, default=0.95)
    a("--easy-neuron-sparsity", type=float, default=0.90)
    a("--retrain-epochs", type=int, default=None, help="easy cases: masked re-training (10)")
    a("--l0-epochs", type=int, default=None, help="easy_neuron: gated training epochs (3)")
    a("--l0-lambda", type=float, default=5e-2, help="λ of mean CE + λ·Σ_j P(z_j ≠ 0)")
    a("--l0-lr", type=float, default=1e-3, help="Adam rate of the weights in gated training")
    a("--l0-gate-lr", type=float, default=2e-2, help="Adam rate of log α")
    a("--l0-init-drop", type=float, default=0.1, help="initial gate drop rate (log α init)")
    # --- bounds
    a("--guarantee", type=float, default=0.5, help="fraction of correct labels guaranteed")
    a("--fractions", type=float, nargs="+", default=None,
      help="guarantees of the accuracy-vs-guarantee curves (Figure 6)")
    a("--delta", type=float, default=0.5, help="failure probability δ of every theorem")
    a("--K", type=float, default=2.0, help="SiPP constant K (Assumption A.3)")
    a("--K-prime", type=float, default=3.0, help="SiPP K' (validation batch size)")
    a("--sipp-val-points", type=int, default=None,
      help="|S| for SiPP sensitivities (default ⌈K' log(2ρ/δ)⌉ of Theorem A.1)")
    a("--mussay-c", type=float, default=1.0, help="the constant c of Theorem A.4")
    a("--coreset-c", type=float, default=1.0, help="the hidden constant of Theorem 2.6")
    a("--beta", type=float, default=None,
      help="input-norm bound β of Theorem A.4 (default: max ‖(x, 1)‖ over the train set)")
    a("--projection-dim", type=int, default=10, help="coreset: PCA dimension")
    a("--mu-random", type=int, default=512, help="μ(P) estimate: random query directions")
    a("--mu-ascent-steps", type=int, default=100, help="μ(P) estimate: gradient-ascent steps")
    a("--sparsities", type=float, nargs="+", default=None,
      help="sparsity-first targets (fraction of the layer removed)")
    a("--max-draws", type=int, default=200_000, help="sparsity-first draw budget per part")
    # --- fine-tuning gap / KD / hidden vs output
    a("--ft-sparsities", type=float, nargs="+", default=None)
    a("--ft-epochs", type=int, default=None, help="fine-tuning epochs (CE, Adam) (5)")
    a("--ft-lr", type=float, default=1e-3)
    a("--kd-epochs", type=int, default=None, help="logit-matching KD epochs (5)")
    a("--kd-lr", type=float, default=1e-3)
    a("--hidden-neuron-sparsity", type=float, default=0.90)
    a("--hidden-weight-sparsity", type=float, default=0.95)
    # --- α-scaling
    a("--alphas", type=float, nargs="+", default=None)
    a("--replot", action="store_true",
      help="only re-write report.md and the PNGs from <out>/results.json (no computation)")
    args = p.parse_args(argv)
    q = args.quick
    dflt = dict(epochs=(1, 15), retrain_epochs=(1, 10), l0_epochs=(1, 3), ft_epochs=(1, 5),
                kd_epochs=(1, 5), limit_train=(3000, None), limit_dev=(1000, None),
                fractions=([0.5, 0.9], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]),
                sparsities=([0.5, 0.9], [0.3, 0.5, 0.7, 0.9, 0.95]),
                ft_sparsities=([0.9], [0.5, 0.7, 0.8, 0.9, 0.95, 0.98]),
                alphas=([0.1, 1.0, 10.0], [0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0]))
    for k, v in dflt.items():
        if getattr(args, k) is None:
            setattr(args, k, v[0] if q else v[1])
    if args.guarantee not in args.fractions:
        args.fractions = sorted(set(args.fractions) | {args.guarantee})
    if 1.0 not in args.alphas:
        args.alphas = sorted(set(args.alphas) | {1.0})
    return args


def log(msg):
    print(msg, flush=True)


def _progress(iterable, desc, total=None):
    """tqdm on a terminal; a plain pass-through otherwise (the stage lines say what runs)."""
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None, file=sys.stderr)


# =========================================================================== network algebra

def _dense(p, x):
    return x @ p["kernel"] + p["bias"]


@jax.jit
def forward(params, x):
    """LeNet-300-100 in eval mode with every intermediate (pure jnp, equals ``model.apply``)."""
    x = x.reshape((x.shape[0], -1))
    z1 = _dense(params["dense_0"], x)
    h1 = jax.nn.relu(z1)
    z2 = _dense(params["dense_1"], h1)
    h2 = jax.nn.relu(z2)
    return {"z1": z1, "h1": h1, "z2": z2, "h2": h2, "logits": _dense(params["head"], h2)}


def forward_np(params, images, chunk=10000):
    """:func:`forward` over a big array in chunks, as numpy."""
    outs = [forward(params, jnp.asarray(images[i:i + chunk])) for i in
            range(0, len(images), chunk)]
    return {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]}


@jax.jit
def _max_sq_h1(params, x):
    return jnp.max(jnp.sum(forward(params, x)["h1"] ** 2, axis=1))


def max_augmented_norm(params, images, chunk=10000):
    """β of Theorem A.4 for the 100→10 layer's two-layer view: ``max ‖(h1(x), 1)‖`` over
    ``images`` (the bias is embedded, so the constant input 1 counts)."""
    m = max(float(_max_sq_h1(params, jnp.asarray(images[i:i + chunk])))
            for i in range(0, len(images), chunk))
    return math.sqrt(m + 1.0)


@jax.jit
def heads_logits(h2, heads):
    """Logits of a stack of final layers: ``h2`` (N, 100), ``heads`` (F, 101, 10) = kernel rows
    with the bias as the last row → (F, N, 10)."""
    return jnp.einsum("nh,fhk->fnk", h2, heads[:, :-1]) + heads[:, -1][:, None, :]


def head_aug(params):
    return np.concatenate([np.asarray(params["head"]["kernel"], np.float64),
                           np.asarray(params["head"]["bias"], np.float64)[None]], 0)


def with_head(params, head):
    p = jax.tree.map(np.asarray, params)
    p = {k: dict(v) for k, v in p.items()}
    p["head"] = {"kernel": np.asarray(head[:-1], np.float32), "bias": np.asarray(head[-1],
                                                                                 np.float32)}
    return p


def ones_like(params):
    return jax.tree.map(lambda x: np.ones(np.shape(x), np.float32), params)


def _host(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


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


# =========================================================================== training cases

class Case(NamedTuple):
    name: str
    model: LeNet300100
    params: dict
    accuracy: float
    seconds: float
    description: str


def sgd_config(args, epochs, l1=0.0, seed=None):
    return train.TrainConfig(optimizer="sgd", learning_rate=args.lr, momentum=args.momentum,
                             schedule=args.schedule, epochs=epochs, batch_size=args.batch_size,
                             l1=l1, seed=args.seed if seed is None else seed, log_every=0)


def _cache_key(args, name):
    keys = ["epochs", "lr", "momentum", "batch_size", "schedule", "seed", "limit_train",
            "dataset"]
    if name == "moderate":
        keys.append("l1")
    if name.startswith("easy"):
        keys += ["retrain_epochs", "easy_weight_sparsity", "easy_neuron_sparsity", "l0_epochs",
                 "l0_lambda", "l0_lr", "l0_gate_lr", "l0_init_drop"]
    return {"case": name, **{k: getattr(args, k) for k in keys}}


def cached(args, name, model, make):
    """``make() -> (params, info)``; with ``--cache-dir`` restore when the training flags match."""
    key = _cache_key(args, name)
    if args.cache_dir:
        path = pathlib.Path(args.cache_dir).resolve() / name
        if checkpoint.is_model_dir(path):
            doc = checkpoint.read_model_json(path)
            if doc.get("meta", {}).get("key") == checkpoint.to_jsonable(key):
                _, variables, _ = checkpoint.load_model(path)
                log(f"  {name}: restored from {path}")
                return _host(variables["params"]), doc["meta"]["info"]
    params, info = make()
    params = _host(params)
    if args.cache_dir:
        checkpoint.save_model(path, model, {"params": params}, meta={"key": key, "info": info})
    return params, info


def magnitude_mask(kernel, sparsity):
    """Global magnitude pruning (Han et al. 2015) of one matrix: keep the largest |w|."""
    w = np.abs(np.asarray(kernel)).ravel()
    keep = int(round((1.0 - sparsity) * w.size))
    mask = np.zeros(w.size, np.float32)
    mask[np.argsort(-w, kind="stable")[:keep]] = 1.0
    return mask.reshape(np.shape(kernel))


def gated_apply(params, x, z):
    """LeNet-300-100 with the 100 last-hidden neurons multiplied by the gates ``z``."""
    x = x.reshape((x.shape[0], -1))
    h1 = jax.nn.relu(_dense(params["dense_0"], x))
    h2 = jax.nn.relu(_dense(params["dense_1"], h1)) * z
    return _dense(params["head"], h2)


def neuron_mask(params, keep):
    """Mask holding the dropped last-hidden neurons at zero (incoming, bias, outgoing)."""
    m = ones_like(params)
    keep = np.asarray(keep, np.float32)
    m["dense_1"]["kernel"] = m["dense_1"]["kernel"] * keep[None, :]
    m["dense_1"]["bias"] = keep.copy()
    m["head"]["kernel"] = m["head"]["kernel"] * keep[:, None]
    return m


def apply_mask(params, mask):
    return jax.tree.map(lambda p, m: np.asarray(p) * m, params, mask)


def train_cases(args, train_ds, dev_ds) -> dict:
    """The training cases of §4.2 / App. B.1 (+ optional dropout cases)."""
    cases = {}

    def fit(model, cfg, variables=None, mask=None):
        return train.fit(model, train_ds, cfg, variables=variables, mask=mask,
                         devices=args.devices, progress=False).variables["params"]

    def add(name, model, make, description):
        t0 = time.time()
        params, info = cached(args, name, model, make)
        acc = train.evaluate(model, {"params": params}, dev_ds)["accuracy"]
        secs = info.get("seconds", time.time() - t0)
        cases[name] = Case(name, model, params, acc, secs, description)
        flag = "" if acc >= args.min_accuracy else f"   (below the {args.min_accuracy:.0%} target)"
        log(f"  {name:12s} dev accuracy {acc:.4f}  ({secs:.0f}s){flag}")

    base = LeNet300100()

    def timed(fn):
        def run():
            t0 = time.time()
            params, info = fn()
            info["seconds"] = time.time() - t0
            return params, info
        return run

    add("difficult", base, timed(lambda: (fit(base, sgd_config(args, args.epochs)), {})),
        "no regularisation")
    add("moderate", base,
        timed(lambda: (fit(base, sgd_config(args, args.epochs, l1=args.l1)), {})),
        f"L1 {args.l1:g}·Σ|kernel|")
    for p in args.dropout:
        m = LeNet300100(dropout_rate=float(p))
        add(f"dropout{p:g}", m, timed(lambda m=m: (fit(m, sgd_config(args, args.epochs)), {})),
            f"dropout {p:g}, no regularisation")

    difficult = cases["difficult"].params

    def make_easy_weight():
        mask = ones_like(difficult)
        mask["head"]["kernel"] = magnitude_mask(difficult["head"]["kernel"],
                                                args.easy_weight_sparsity)
        pruned = apply_mask(difficult, mask)
        acc0 = train.evaluate(base, {"params": pruned}, dev_ds)["accuracy"]
        params = fit(base, sgd_config(args, args.retrain_epochs, seed=args.seed + 1),
                     {"params": pruned}, mask)
        return params, {"accuracy_before_retrain": acc0}

    add("easy_weight", base, timed(make_easy_weight),
        f"final weight matrix magnitude-pruned to {args.easy_weight_sparsity:.0%}, re-trained "
        "masked")

    def make_easy_neuron():
        la = gates.init_log_alpha((100,), args.l0_init_drop)
        bs = args.batch_size

        def batches():
            for e in range(args.l0_epochs):
                yield from data.batches(train_ds, bs, seed=args.seed + 7, epoch=e)

        n_steps = args.l0_epochs * data.num_batches(len(train_ds), bs)
        bar = _progress(range(n_steps), "L0 gates")
        it = iter(bar)
        params, la, hist = gates.fit_l0(gated_apply, jax.tree.map(jnp.asarray, difficult), la,
                                        batches(), lam=args.l0_lambda,
                                        key=jax.random.PRNGKey(args.seed + 3),
                                        learning_rate=args.l0_lr,
                                        gate_learning_rate=args.l0_gate_lr,
                                        progress=lambda i: next(it, None))
        bar.close()
        params, la = _host(params), np.asarray(la)
        zhat = np.asarray(gates.deterministic_gate(la))
        closed = int(np.sum(zhat == 0.0))
        num_keep = int(round((1.0 - args.easy_neuron_sparsity) * 100))
        keep = gates.keep_mask(la, num_keep)
        # fold the test-time gate of the kept neurons into their outgoing weights
        params["head"]["kernel"] = params["head"]["kernel"] * zhat[:, None].astype(np.float32)
        mask = neuron_mask(params, keep)
        pruned = apply_mask(params, mask)
        acc0 = train.evaluate(base, {"params": pruned}, dev_ds)["accuracy"]
        params = fit(base, sgd_config(args, args.retrain_epochs, seed=args.seed + 2),
                     {"params": pruned}, mask)
        log(f"  easy_neuron: L0 training closed {closed}/100 gates (test-time gate = 0), "
            f"E[L0] = {float(gates.expected_l0(la)):.1f}; kept the {num_keep} most open")
        return params, {"gates_closed": closed, "expected_l0": float(gates.expected_l0(la)),
                        "accuracy_before_retrain": acc0,
                        "l0_final_ce": hist[-1][1] if hist else None}

    add("easy_neuron", base, timed(make_easy_neuron),
        f"last hidden layer L0-gated, {args.easy_neuron_sparsity:.0%} of neurons pruned, "
        "re-trained masked")
    return cases


# =========================================================================== per-network data

class Net(NamedTuple):
    name: str
    params: dict
    dev: dict              # forward outputs on dev
    labels: np.ndarray
    accuracy: float
    head: np.ndarray       # (101, 10) kernel rows + bias row
    sipp_x: np.ndarray     # (|S|, 101) validation inputs [h2 | 1]
    beta: float            # max ‖(h1, 1)‖ over train
    eps: dict              # kind -> (F,) ε for args.fractions


def prepare(case: Case, args, train_ds, dev_ds, beta_images) -> Net:
    dev = forward_np(case.params, dev_ds.images)
    ref = train.predict_logits(case.model, {"params": case.params}, dev_ds.images[:64])
    np.testing.assert_allclose(dev["logits"][:64], ref, rtol=1e-4, atol=1e-4,
                               err_msg="forward() must equal model.apply")
    labels = np.asarray(dev_ds.labels)
    acc = float(np.mean(np.argmax(dev["logits"], 1) == labels))
    head = head_aug(case.params)
    rho = int(np.count_nonzero(head))
    n_s = args.sipp_val_points or B.sipp_num_validation_points(rho, args.delta, args.K_prime)
    idx = np.random.default_rng([args.seed, 11]).choice(len(train_ds), n_s, replace=False)
    h2 = forward_np(case.params, train_ds.images[idx])["h2"]
    sipp_x = np.concatenate([h2, np.ones((n_s, 1), h2.dtype)], 1)
    beta = float(args.beta) if args.beta else max_augmented_norm(case.params, beta_images)
    eps = {k: np.asarray(B.epsilon_for_guarantee(dev["logits"], labels,
                                                 np.asarray(args.fractions), k))
           for k in ("additive", "multiplicative")}
    return Net(case.name, case.params, dev, labels, acc, head, sipp_x, beta, eps)


def metrics_of(net: Net, heads: np.ndarray, kind: str, eps=None) -> list[dict]:
    """Accuracy, labels kept, observed errors (both kinds) and the Lemma 4.1 guarantee of
    every final layer in ``heads`` (F, 101, 10)."""
    logits = np.asarray(heads_logits(jnp.asarray(net.dev["h2"]), jnp.asarray(heads,
                                                                              jnp.float32)))
    orig = net.dev["logits"]
    correct = np.argmax(orig, 1) == net.labels
    out = []
    for f in range(heads.shape[0]):
        pred = np.argmax(logits[f], 1)
        err = errors(orig, logits[f], kind)
        row = {"accuracy": float(np.mean(pred == net.labels)),
               "kept_correct": float(np.mean(pred[correct] == net.labels[correct])),
               "errors": err, "observed": err[kind], "observed_median": err[kind + "_median"],
               "observed_unit_mean": err[kind + "_unit_mean"]}
        if eps is not None:
            e = float(eps[f])
            row["guaranteed_fraction"] = (
                float(B.guaranteed_fraction(orig, net.labels, e, kind)) if math.isfinite(e)
                else 0.0)
        out.append(row)
    return out


# =========================================================================== the four methods

class Sipp:
    """SiPP on the final layer: 10 output perceptrons × {positive, negative} weights = 20
    parts over the 101 inputs ``[h2 | 1]`` (bias embedded)."""

    def __init__(self, net: Net, args):
        w = net.head.T                                            # (10, 101)
        self.signed = np.concatenate([np.maximum(w, 0), np.minimum(w, 0)])   # (20, 101)
        pos = np.concatenate([w, -w])                              # the part's weights, > 0 in I
        s = jax.vmap(B.sipp_sensitivities, in_axes=(0, None))(
            jnp.asarray(pos, jnp.float32), jnp.asarray(net.sipp_x, jnp.float32))
        self.s = np.asarray(s, np.float64)                         # (20, 101), 0 outside I
        self.total = self.s.sum(1)                                 # S per part
        self.n_part = (self.signed != 0).sum(1)                    # |I| of every part
        self.args = args

    def assemble(self, factors):
        """``factors`` (F, 20, 101) → heads (F, 101, 10)."""
        parts = self.signed[None] * factors
        return np.transpose(parts[:, :10] + parts[:, 10:], (0, 2, 1))

    # --- epsilon-first
    def rand_samples(self, eps):
        a = self.args
        m = np.zeros((len(eps), 20))
        act = self.total > 0
        m[:, act] = B.sipp_randomized_samples(np.asarray(eps)[:, None], self.total[act][None],
                                              a.delta, a.K)
        return m

    def rand_epsilon_first(self, eps, rng):
        m = self.rand_samples(eps)
        q = np.where(self.total[:, None] > 0, self.s / np.where(self.total > 0, self.total,
                                                               1.0)[:, None], 1.0 / 101)
        big = m > MAX_DRAW                                         # → the m → ∞ limit
        counts = rng.multinomial(np.where(big, 0, m).astype(np.int64), q)   # (F, 20, 101)
        with np.errstate(divide="ignore", invalid="ignore"):
            fac = np.where(counts > 0, counts / (m[:, :, None] * q[None]), 0.0)
        fac = np.where(big[:, :, None], (self.s > 0)[None].astype(np.float64), fac)
        return self.assemble(fac), m.sum(1), {"limit_network": np.any(big, 1).tolist()}

    def det_samples(self, eps):
        return np.stack([B.sipp_deterministic_samples(np.asarray(eps), self.s[p], self.args.K)
                         for p in range(20)], 1)                   # (F, 20)

    def _topk(self, k):
        rank = np.argsort(np.argsort(-self.s, axis=1, kind="stable"), axis=1, kind="stable")
        return (rank[None] < np.asarray(k)[:, :, None]).astype(np.float64)

    def det_epsilon_first(self, eps):
        m = self.det_samples(eps)
        fac = self._topk(m)
        return self.assemble(fac), m.sum(1), {}

    # --- sparsity-first
    def keep_targets(self, sparsity):
        """Keep budget ⌈(1 − s)·101⌉ per output perceptron, split over its two signed parts
        in proportion to their sizes (the layer's zeros belong to neither part)."""
        per = (1.0 - sparsity) * 101
        w = self.n_part.reshape(2, 10)
        tot = np.maximum(w.sum(0), 1)
        return np.ceil(per * w / tot[None] - 1e-9).astype(int).reshape(20)

    def rand_sparsity_first(self, sparsity, key):
        a = self.args
        k = self.keep_targets(sparsity)
        fac = np.zeros((20, 101))
        m_total, eps = 0, 0.0
        for p in range(20):
            if self.n_part[p] == 0:
                continue
            eps_for = functools.partial(B.sipp_randomized_epsilon,
                                        total_sensitivity=max(self.total[p], 1e-300),
                                        delta=a.delta, K=a.K)
            try:
                d = B.sparsity_first(jax.random.fold_in(key, p), self.s[p], int(k[p]), eps_for,
                                     max_draws=a.max_draws)
            except ValueError as e:
                return None, None, {"unreachable": f"part {p} (output {p % 10}, "
                                    f"{'+' if p < 10 else '-'}): {e}"}
            fac[p] = d.weights
            m_total += d.num_samples
            eps = max(eps, d.epsilon)
        return self.assemble(fac[None]), m_total, {"epsilon": eps}

    def det_sparsity_first(self, sparsity):
        k = np.minimum(self.keep_targets(sparsity), 101)
        fac = self._topk(k[None])
        eps = max(float(B.sipp_deterministic_epsilon(int(k[p]), self.s[p], self.args.K))
                  for p in range(20))
        heads = self.assemble(fac)
        return heads, int(np.count_nonzero(heads)), {"epsilon": eps}


class Neurons:
    """Neuron sampling on the 100 inputs of the final layer (two-layer view
    ``W⁽¹⁾ = dense_1``, ``W⁽²⁾ = head``, input ``h1`` of dimension d = 300)."""

    def __init__(self, net: Net, args, method):
        self.args, self.method, self.net = args, method, net
        p = net.params
        self.w1 = np.asarray(p["dense_1"]["kernel"], np.float64).T        # (100, 300)
        self.b1 = np.asarray(p["dense_1"]["bias"], np.float64)
        self.w2 = np.asarray(p["head"]["kernel"], np.float64).T           # (10, 100)
        self.d = self.w1.shape[1]
        self.info = {}
        if method == "mussay":
            # as stated, s_j = max_i w2_ij φ(β‖w1_j‖) can be ≤ 0; sampling needs |w2| (Alg. 3)
            self.s = np.asarray(B.mussay_sensitivities(self.w1, self.b1, self.w2, net.beta,
                                                       absolute=True), np.float64)
            self.info["beta"] = net.beta
        else:
            points = np.concatenate([self.w1, self.b1[:, None]], 1)      # (100, 301)
            is_bias = np.zeros(points.shape[1], bool)
            is_bias[-1] = True
            view = LayerView(jnp.asarray(points, jnp.float32), jnp.asarray(np.abs(self.w2.T),
                                                                           jnp.float32), is_bias)
            self.s = np.asarray(coreset_method.score(jax.random.PRNGKey(args.seed), view,
                                                     projection="pca",
                                                     projection_dim=args.projection_dim),
                                np.float64)
            # an all-zero point (a pre-pruned neuron) adds 0 to both sums of Definition 2.3,
            # so μ(P) = μ(P without it); dropped here because the LP certificate of
            # B.mu_is_unbounded asks every point to be strictly negative, which p = 0 never is
            live = np.any(points != 0, axis=1)
            mu = B.estimate_mu(points[live], seed=args.seed, num_random=args.mu_random,
                               ascent_steps=args.mu_ascent_steps)
            self.mu = mu.value
            self.rank = int(np.linalg.matrix_rank(points))
            self.info.update(mu=mu.value, mu_unbounded=mu.unbounded, rank=self.rank, n=100,
                             d=self.d, zero_points=int(np.sum(~live)))
        self.total = float(self.s.sum())
        self.info["total_sensitivity"] = self.total
        self.q = self.s / self.total

    def samples(self, eps):
        a = self.args
        if self.method == "mussay":
            return np.asarray(B.mussay_samples(np.asarray(eps), self.total, self.d, a.delta,
                                               a.mussay_c), np.float64).reshape(-1)
        return np.asarray(B.coreset_samples(np.asarray(eps), self.mu, self.rank, 100, self.d,
                                            a.delta, a.coreset_c), np.float64).reshape(-1)

    def epsilon_for(self, m):
        a = self.args
        if self.method == "mussay":
            return B.mussay_epsilon(m, self.total, self.d, a.delta, a.mussay_c)
        return B.coreset_epsilon(m, self.mu, self.rank, 100, self.d, a.delta, a.coreset_c)

    def assemble(self, factors):
        heads = np.repeat(self.net.head[None], factors.shape[0], 0)
        heads[:, :-1] *= factors[:, :, None]
        return heads

    def epsilon_first(self, eps, rng):
        m = self.samples(eps)
        fin = m <= MAX_DRAW
        counts = np.zeros((len(m), 100))
        if np.any(fin):
            counts[fin] = rng.multinomial(m[fin].astype(np.int64), self.q)
        with np.errstate(divide="ignore", invalid="ignore"):
            fac = np.where(counts > 0, counts / (m[:, None] * self.q[None]), 0.0)
        # m = ∞ (or > MAX_DRAW): the m → ∞ limit keeps every σ_j > 0, weight count/(m q) → 1
        fac[~fin] = (self.s > 0).astype(np.float64)
        return self.assemble(fac), m, {"limit_network": (~fin).tolist()}

    def sparsity_first(self, sparsity, key):
        k = int(math.ceil((1.0 - sparsity) * 100 - 1e-9))
        try:
            d = B.sparsity_first(key, self.s, k, self.epsilon_for, max_draws=self.args.max_draws)
        except ValueError as e:
            return None, None, {"unreachable": str(e)}
        return self.assemble(np.asarray(d.weights, np.float64)[None]), d.num_samples, \
            {"epsilon": float(d.epsilon)}


def layer_size(method, net):
    """Weights + embedded biases of the 100→10 layer (1,010) or its 100 input neurons."""
    return int(net.head.size) if method in WEIGHT_METHODS else 100


def sparsity_of(method, heads):
    if method in WEIGHT_METHODS:
        return 1.0 - np.count_nonzero(heads, axis=(1, 2)) / heads[0].size
    return 1.0 - np.count_nonzero(np.any(heads[:, :-1] != 0, axis=2), axis=1) / 100.0


def analyse(net: Net, method: str, args) -> dict:
    """Epsilon-first over ``args.fractions`` and sparsity-first over ``args.sparsities``."""
    rng = np.random.default_rng([args.seed, 5, METHODS.index(method)])
    key = jax.random.PRNGKey(args.seed + 17)
    kind = KIND[method]
    eps = net.eps[kind]
    if method in WEIGHT_METHODS:
        obj = Sipp(net, args)
        act = obj.n_part > 0
        info = {"total_sensitivity_per_part": obj.total.tolist(),
                "weights_per_part": obj.n_part.tolist(),
                # S ≤ |I| (every s_j ≤ 1): how far below its maximum the total sensitivity is
                "mean_S_over_max": float(np.mean(obj.total[act] / obj.n_part[act])),
                "validation_points": int(net.sipp_x.shape[0])}
        if method == "sipp_rand":
            heads, samples, extra = obj.rand_epsilon_first(eps, rng)
        else:
            heads, samples, extra = obj.det_epsilon_first(eps)
    else:
        obj = Neurons(net, args, method)
        info = dict(obj.info)
        heads, samples, extra = obj.epsilon_first(eps, rng)
    size = layer_size(method, net)
    sp = sparsity_of(method, heads)
    rows = metrics_of(net, heads, kind, eps)
    eps_first = []
    for f, frac in enumerate(args.fractions):
        r = {"fraction": frac, "epsilon": float(eps[f]), "samples": float(samples[f]),
             "layer_size": size, "sparsity": float(sp[f]),
             "vacuous": bool(not math.isfinite(samples[f]) or samples[f] > size), **rows[f]}
        if extra.get("limit_network"):
            r["limit_network"] = bool(extra["limit_network"][f])
        eps_first.append(r)
    # sparsity-first
    sf = []
    for i, target in enumerate(args.sparsities):
        k = jax.random.fold_in(key, i)
        if method == "sipp_rand":
            h, m, ex = obj.rand_sparsity_first(target, k)
        elif method == "sipp_det":
            h, m, ex = obj.det_sparsity_first(target)
        else:
            h, m, ex = obj.sparsity_first(target, k)
        if h is None:
            sf.append({"target_sparsity": target, "unreachable": ex["unreachable"]})
            continue
        e = ex["epsilon"]
        r = {"target_sparsity": target, "sparsity": float(sparsity_of(method, h)[0]),
             "samples": float(m), "epsilon": e,
             **metrics_of(net, h, kind, np.asarray([e]))[0]}
        sf.append(r)
    return {"network": net.name, "method": method, "kind": kind, "dense_accuracy": net.accuracy,
            "info": info, "epsilon_first": eps_first, "sparsity_first": sf}


# =========================================================================== fine-tuning, KD

@functools.lru_cache(maxsize=8)
def _kd_step(lr, total_steps):
    sched = optax.cosine_decay_schedule(lr, max(total_steps, 1))
    tx = optax.adam(sched)

    @jax.jit
    def step(params, opt_state, mask, teacher, x):
        t = forward(teacher, x)["logits"]

        def loss_fn(p):
            return jnp.mean((forward(p, x)["logits"] - t) ** 2)

        loss, g = jax.value_and_grad(loss_fn)(params)
        g = jax.tree.map(lambda a, m: a * m, g, mask)
        upd, opt_state = tx.update(g, opt_state, params)
        upd = jax.tree.map(lambda a, m: a * m, upd, mask)
        return jax.tree.map(lambda p, u, m: (p + u) * m, params, upd, mask), opt_state, loss

    return tx, step


def distill_logits(params, mask, teacher, train_ds, args, epochs, seed):
    """Logit-matching KD (bounds paper §5.2: fine-tune the pruned net to approximate the dense
    net's pre-softmax outputs): Adam on ``mean ‖f̂(x) − f(x)‖²``, masked entries held at 0."""
    bs = args.batch_size
    steps = epochs * data.num_batches(len(train_ds), bs)
    tx, step = _kd_step(float(args.kd_lr), steps)
    params = jax.tree.map(jnp.asarray, apply_mask(params, mask))
    mask = jax.tree.map(jnp.asarray, mask)
    teacher = jax.tree.map(jnp.asarray, teacher)
    opt = tx.init(params)
    for e in range(epochs):
        for x, _ in data.batches(train_ds, bs, seed=seed, epoch=e):
            params, opt, _ = step(params, opt, mask, teacher, jnp.asarray(x))
    return _host(params)


def finetune(params, mask, train_ds, args, epochs, seed):
    """Cross-entropy fine-tuning (Adam, cosine) with masked entries held at 0."""
    cfg = train.TrainConfig(optimizer="adam", learning_rate=args.ft_lr, schedule="cosine",
                            epochs=epochs, batch_size=args.batch_size, seed=seed, log_every=0)
    model = LeNet300100()
    return _host(train.fit(model, train_ds, cfg, variables={"params": params}, mask=mask,
                           devices=args.devices, progress=False).variables["params"])


def errors(orig, new, bound_kind):
    """Observed error of ``new`` against ``orig`` (N, units), both kinds.  ``additive`` /
    ``multiplicative``: mean and std over examples of the per-example *max* over units (the
    smallest ε for which the element-wise guarantee holds on that example,
    :func:`jaxprune.bounds.observed_error`); ``*_median``: the median of that per-example
    value; ``*_unit_mean``: the same with the *mean* over units instead of the max.
    Multiplicative errors are large where ``|f_u(x)|`` is close to 0."""
    a = B.observed_error(orig, new)
    u = B.observed_error(orig, new, reduce="mean")
    return {"additive": (a.additive_mean, a.additive_std),
            "multiplicative": (a.multiplicative_mean, a.multiplicative_std),
            "additive_median": float(np.median(a.additive)),
            "multiplicative_median": float(np.nanmedian(a.multiplicative)),
            "additive_unit_mean": (u.additive_mean, u.additive_std),
            "multiplicative_unit_mean": (u.multiplicative_mean, u.multiplicative_std),
            "bound_kind": bound_kind}


def finetune_gap(net: Net, args, train_ds, dev_ds) -> list[dict]:
    """Figure 3: deterministic SiPP sparsity-first on the difficult net's final layer, then
    CE fine-tuning and logit-matching KD."""
    sipp = Sipp(net, args)
    rows = []
    for i, target in enumerate(_progress(args.ft_sparsities, "fine-tuning gap")):
        heads, _, ex = sipp.det_sparsity_first(target)
        head = heads[0]
        pruned = with_head(net.params, head)
        mask = ones_like(net.params)
        keep = (head != 0).astype(np.float32)
        mask["head"] = {"kernel": keep[:-1], "bias": keep[-1]}
        m = metrics_of(net, heads, "multiplicative", np.asarray([ex["epsilon"]]))[0]
        ft = finetune(pruned, mask, train_ds, args, args.ft_epochs, args.seed + 100 + i)
        kd = distill_logits(pruned, mask, net.params, train_ds, args, args.kd_epochs,
                            args.seed + 200 + i)
        row = {"target_sparsity": target, "sparsity": float(sparsity_of("sipp_det", heads)[0]),
               "epsilon": ex["epsilon"], "guaranteed_fraction": m["guaranteed_fraction"],
               "guaranteed_accuracy": m["guaranteed_fraction"] * net.accuracy,
               "accuracy_pruned": m["accuracy"],
               "error_pruned": errors(net.dev["logits"], forward_np(pruned, dev_ds.images)[
                   "logits"], "multiplicative")}
        for name, p in (("finetuned", ft), ("kd", kd)):
            out = forward_np(p, dev_ds.images)["logits"]
            row[f"accuracy_{name}"] = float(np.mean(np.argmax(out, 1) == net.labels))
            row[f"error_{name}"] = errors(net.dev["logits"], out, "multiplicative")
        rows.append(row)
        log(f"    sparsity {row['sparsity']:.3f}: acc pruned {row['accuracy_pruned']:.4f} "
            f"(guaranteed {row['guaranteed_accuracy']:.4f}), fine-tuned "
            f"{row['accuracy_finetuned']:.4f}, KD {row['accuracy_kd']:.4f}")
    return rows


# =========================================================================== hidden vs output

def _raw_pixel_layer(kernel, bias, mean, std):
    """The first layer in raw-pixel coordinates ``x_raw = σ x + μ ∈ [0, 1]`` (non-negative
    inputs, as SiPP requires): ``z = x W + b = x_raw (W/σ) + (b − (μ/σ) Σ_i W_i)``."""
    w = kernel / std
    return w, bias - (mean / std) * kernel.sum(0)


def hidden_vs_output(net: Net, args, train_ds, dev_ds) -> dict:
    """§5.2: prune the FIRST layer of the difficult net, compare the error at the hidden layer
    the bound speaks about with the error at the logits, before and after logit-matching KD."""
    p = net.params
    x_dev = dev_ds.images
    mean, std = (float(v[0]) for v in data.NORMALIZATION[args.dataset])
    out = {}
    # ---- (a) Mussay neurons of dense_0 (two-layer view dense_0 → dense_1); hidden = z2
    w1 = np.asarray(p["dense_0"]["kernel"], np.float64).T           # (300, 784)
    b1 = np.asarray(p["dense_0"]["bias"], np.float64)
    w2 = np.asarray(p["dense_1"]["kernel"], np.float64).T           # (100, 300)
    flat = train_ds.images.reshape(len(train_ds), -1)
    beta0 = float(np.sqrt(np.max(np.sum(np.square(flat, dtype=np.float32), 1)) + 1.0))
    s = np.asarray(B.mussay_sensitivities(w1, b1, w2, beta0, absolute=True), np.float64)
    t = float(s.sum())
    k = int(math.ceil((1.0 - args.hidden_neuron_sparsity) * 300 - 1e-9))
    d = B.sparsity_first(jax.random.PRNGKey(args.seed + 31), s, k,
                         lambda m: B.mussay_epsilon(m, t, 784, args.delta, args.mussay_c),
                         max_draws=args.max_draws)
    kept = np.asarray(d.counts) > 0
    mask = ones_like(p)
    mask["dense_0"]["kernel"] = np.repeat(kept[None].astype(np.float32), 784, 0)
    mask["dense_0"]["bias"] = kept.astype(np.float32)
    mask["dense_1"]["kernel"] = np.repeat(kept[:, None].astype(np.float32), 100, 1)
    pruned = {k_: dict(v) for k_, v in _host(p).items()}
    pruned["dense_1"] = {"kernel": (np.asarray(p["dense_1"]["kernel"]) *
                                    np.asarray(d.weights, np.float32)[:, None]),
                         "bias": np.asarray(p["dense_1"]["bias"])}
    pruned = apply_mask(pruned, mask)
    out["neuron"] = _hidden_row(net, pruned, mask, "z2", "additive", d.epsilon,
                                1.0 - kept.mean(), beta0, args, train_ds, x_dev)
    # ---- (b) deterministic SiPP weights of dense_0 in raw-pixel coordinates; hidden = z1
    kern = np.asarray(p["dense_0"]["kernel"], np.float64)
    bias = np.asarray(p["dense_0"]["bias"], np.float64)
    wr, br = _raw_pixel_layer(kern, bias, mean, std)
    aug = np.concatenate([wr, br[None]], 0).T                        # (300, 785)
    rho = int(np.count_nonzero(aug))
    n_s = args.sipp_val_points or B.sipp_num_validation_points(rho, args.delta, args.K_prime)
    idx = np.random.default_rng([args.seed, 13]).choice(len(train_ds), n_s, replace=False)
    xr = flat[idx].astype(np.float64) * std + mean
    xs = np.concatenate([np.clip(xr, 0.0, None), np.ones((n_s, 1))], 1)
    parts = np.concatenate([aug, -aug])                              # (600, 785)
    sens = np.asarray(jax.vmap(B.sipp_sensitivities, in_axes=(0, None))(
        jnp.asarray(parts, jnp.float32), jnp.asarray(xs, jnp.float32)), np.float64)
    n_part = (parts > 0).sum(1)
    keep_k = np.ceil((1.0 - args.hidden_weight_sparsity) * n_part - 1e-9).astype(int)
    rank = np.argsort(np.argsort(-sens, axis=1, kind="stable"), axis=1, kind="stable")
    keep = (rank < keep_k[:, None]) & (parts > 0)
    eps = max(float(B.sipp_deterministic_epsilon(int(keep_k[i]), sens[i], args.K))
              for i in range(600))
    kmask = (keep[:300] | keep[300:]).T                               # (785, 300)
    wmask = kmask[:-1].astype(np.float32)
    new_kernel = kern * wmask
    new_bias = br * kmask[-1] + (mean / std) * new_kernel.sum(0)
    pruned = {k_: dict(v) for k_, v in _host(p).items()}
    pruned["dense_0"] = {"kernel": new_kernel.astype(np.float32),
                         "bias": new_bias.astype(np.float32)}
    mask = ones_like(p)
    mask["dense_0"]["kernel"] = wmask
    out["weight"] = _hidden_row(net, pruned, mask, "z1", "multiplicative", eps,
                                1.0 - wmask.mean(), None, args, train_ds, x_dev)
    return out


def _hidden_row(net, pruned, mask, hidden, kind, eps, sparsity, beta, args, train_ds, x_dev):
    before = forward_np(pruned, x_dev)
    kd = distill_logits(pruned, mask, net.params, train_ds, args, args.kd_epochs,
                        args.seed + 300)
    after = forward_np(kd, x_dev)
    row = {"sparsity": float(sparsity), "hidden_layer": hidden, "bound_kind": kind,
           "implied_epsilon": float(eps), "beta": beta}
    for tag, o in (("pruned", before), ("kd", after)):
        row[f"accuracy_{tag}"] = float(np.mean(np.argmax(o["logits"], 1) == net.labels))
        row[f"output_error_{tag}"] = errors(net.dev["logits"], o["logits"], kind)
        row[f"hidden_error_{tag}"] = errors(net.dev[hidden], o[hidden], kind)
    return row


# =========================================================================== α-scaling

def alpha_scaling(net: Net, args) -> list[dict]:
    """Lemma C.1 / Corollary C.2 on the last two layers of ``net`` (input h1)."""
    p = net.params
    two = tuple(jnp.asarray(v, jnp.float32) for v in (
        np.asarray(p["dense_1"]["kernel"]).T, p["dense_1"]["bias"],
        np.asarray(p["head"]["kernel"]).T, p["head"]["bias"]))
    h1 = jnp.asarray(net.dev["h1"])
    base = np.asarray(B.two_layer_forward(two, h1))
    labels0 = np.argmax(base, 1)
    sens = functools.partial(B.mussay_sensitivities, absolute=True)
    t1 = B.total_sensitivity(two, net.beta, 1.0, sensitivity_fn=sens)
    points = np.concatenate([np.asarray(two[0]), np.asarray(two[1])[:, None]], 1)
    is_bias = np.zeros(points.shape[1], bool)
    is_bias[-1] = True
    outgoing = jnp.asarray(np.abs(np.asarray(two[2])).T)
    g = args.guarantee
    rows = []
    ref = {}
    for alpha in _progress(args.alphas, "alpha-scaling"):
        sc = B.scale_two_layer(two, alpha)
        logits = np.asarray(B.two_layer_forward(sc, h1))
        t = B.total_sensitivity(two, net.beta, alpha, sensitivity_fn=sens)
        t_rebal = B.total_sensitivity(two, net.beta, alpha, w2_power=-1, sensitivity_fn=sens)
        e_add = float(B.epsilon_for_guarantee(logits, net.labels, g, "additive"))
        e_mul = float(B.epsilon_for_guarantee(logits, net.labels, g, "multiplicative"))
        m = float(B.mussay_samples(e_add, t, points.shape[1] - 1, args.delta, args.mussay_c))
        # SiPP (scale-invariant, bounds paper footnote 6): inputs α·h2 on the S batch
        sx = net.sipp_x.copy()
        sx[:, :-1] *= alpha
        head_sc = np.concatenate([np.asarray(p["head"]["kernel"]), alpha *
                                  np.asarray(p["head"]["bias"])[None]], 0).T
        s_sipp = jax.vmap(B.sipp_sensitivities, in_axes=(0, None))(
            jnp.asarray(np.concatenate([head_sc, -head_sc]), jnp.float32),
            jnp.asarray(sx, jnp.float32))
        view = LayerView(jnp.asarray(alpha * points, jnp.float32), outgoing, is_bias)
        t_core = float(jnp.sum(coreset_method.score(jax.random.PRNGKey(args.seed), view,
                                                    projection="pca",
                                                    projection_dim=args.projection_dim)))
        row = {"alpha": alpha, "total_sensitivity": t, "t_ratio": t / t1,
               "t_rebalanced_ratio": t_rebal / t1,
               "labels_unchanged": float(np.mean(np.argmax(logits, 1) == labels0)),
               "max_rel_dev_from_alpha_f": float(np.max(np.abs(logits - alpha * base)) /
                                                 (alpha * np.max(np.abs(base)))),
               "epsilon_additive": e_add, "epsilon_multiplicative": e_mul,
               "mussay_samples": m, "sipp_total_sensitivity": float(jnp.sum(s_sipp)),
               "coreset_total_sensitivity": t_core}
        if alpha == 1.0:
            ref = row
        rows.append(row)
    for r in rows:
        r["epsilon_additive_ratio"] = r["epsilon_additive"] / ref["epsilon_additive"]
        r["samples_ratio"] = r["mussay_samples"] / ref["mussay_samples"]
        r["sipp_ratio"] = r["sipp_total_sensitivity"] / ref["sipp_total_sensitivity"]
        r["coreset_ratio"] = r["coreset_total_sensitivity"] / ref["coreset_total_sensitivity"]
    return rows


# =========================================================================== tables

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


def card_rows(result, args):
    g = result["args"]["guarantee"]
    rows = []
    for r in result["analyses"]:
        row = next(x for x in r["epsilon_first"] if x["fraction"] == g)
        rows.append((r, row))
    return rows


def report_card_table(result, args) -> str:
    lines = [f"Figure 2 — epsilon-first pruning of LeNet-300-100's final layer, guaranteeing "
             f"{args.guarantee:.0%} of the correct dev labels (δ = {args.delta}).",
             "",
             "Observed err: per dev example the max over the 10 logits of the error in the "
             "bound's kind (mult. = |f̂−f|/|f|, add. = |f̂−f|), mean±std over examples "
             "[median]; 'unit mean' averages over the logits instead of the max.",
             "",
             "| Prune type | Case | Required ε | Observed err (max) | Observed err (unit mean) "
             "| Acc dense → pruned | kept correct (guaranteed) | Layer size | Samples required "
             "| Sparsity (%) | paper: ε · obs · samples · sparsity |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r, row in card_rows(result, args):
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
        lines.append(
            f"| {METHOD_LABEL[r['method']]} | {case} ({r['network']}) | "
            f"{fmt_eps(row['epsilon'])} ({r['kind'][:4]}.) | {fmt_pm(row['observed'])} "
            f"[{row['observed_median']:.3g}] | {fmt_pm(row['observed_unit_mean'])} | "
            f"{r['dense_accuracy']:.4f} → {row['accuracy']:.4f} | "
            f"{row['kept_correct']:.4f} ({row['guaranteed_fraction']:.2f}) | {size:,} | "
            f"{fmt_count(samples)}{rel}{vac} | {100 * row['sparsity']:.2f}{lim} | {ptxt} |")
    return "\n".join(lines)


def cases_table(result) -> str:
    lines = ["Training cases (LeNet-300-100, dev = MNIST test split)", "",
             "| case | description | dev accuracy | final layer: zero weights | last hidden: "
             "neurons with zero outgoing weights | train time (s) |", "|---|---|---|---|---|---|"]
    for c in result["cases"]:
        lines.append(f"| {c['name']} | {c['description']} | {c['accuracy']:.4f} | "
                     f"{100 * c['head_zero_fraction']:.1f}% | {c['dead_neurons']}/100 | "
                     f"{c['seconds']:.0f} |")
    return "\n".join(lines)


def sparsity_first_table(result) -> str:
    lines = ["Sparsity-first pruning of the final layer (implied ε from the number of draws; "
             "guarantee = Lemma 4.1 fraction of correct labels)", "",
             "| Prune type | Case | target sparsity | achieved | draws m | implied ε | "
             "guaranteed fraction | accuracy | observed err |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["analyses"]:
        for x in r["sparsity_first"]:
            head = f"| {METHOD_LABEL[r['method']]} | {r['network']} | {x['target_sparsity']:.2f} |"
            if "unreachable" in x:
                msg = x["unreachable"].replace("|", "/")
                lines.append(f"{head} **unreachable** — {msg[:160]} | | | | | | |")
                continue
            lines.append(f"{head} {x['sparsity']:.3f} | {fmt_count(x['samples'])} | "
                         f"{fmt_eps(x['epsilon'])} | {x['guaranteed_fraction']:.3f} | "
                         f"{x['accuracy']:.4f} | {fmt_pm(x['observed'])} |")
    return "\n".join(lines)


def finetune_table(result) -> str:
    lines = ["Figure 3 — fine-tuning gap: difficult net, final layer pruned sparsity-first with "
             "deterministic SiPP, then CE fine-tuning or logit-matching KD (logit errors: "
             "multiplicative / additive, mean±std)", "",
             "| sparsity | implied ε | guaranteed acc | acc pruned | acc fine-tuned | acc KD | "
             "logit err pruned | logit err fine-tuned | logit err KD |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["finetune_gap"]:
        def e(tag):
            x = r[f"error_{tag}"]
            return f"{fmt_pm(x['multiplicative'])} / {fmt_pm(x['additive'])}"
        lines.append(f"| {r['sparsity']:.3f} | {fmt_eps(r['epsilon'])} | "
                     f"{r['guaranteed_accuracy']:.4f} | {r['accuracy_pruned']:.4f} | "
                     f"{r['accuracy_finetuned']:.4f} | {r['accuracy_kd']:.4f} | {e('pruned')} | "
                     f"{e('finetuned')} | {e('kd')} |")
    return "\n".join(lines)


def hidden_table(result) -> str:
    lines = ["§5.2 — hidden vs output error: the FIRST layer of the difficult net pruned, then "
             "logit-matching KD.  Errors in the bound's kind (additive for neurons, "
             "multiplicative for weights): max over units, mean±std over dev examples "
             "[median]; then the mean over units.  Hidden = the pre-activation the pruned "
             "layer's bound speaks about (z1 for weights of dense_0, z2 for its neurons).", "",
             "| Prune type | sparsity | prune acc | output err | hidden err | post-KD acc | "
             "output err | hidden err | paper (acc, out, hidden → KD acc, out, hidden) |",
             "|---|---|---|---|---|---|---|---|---|"]
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
        lines.append(f"| {label} | {r['sparsity']:.3f} | {r['accuracy_pruned']:.4f} | "
                     f"{e('output_error_pruned')} | {e('hidden_error_pruned')} | "
                     f"{r['accuracy_kd']:.4f} | {e('output_error_kd')} | {e('hidden_error_kd')} "
                     f"| {ptxt} |")
    return "\n".join(lines)


def alpha_table(result) -> str:
    lines = ["Lemma C.1 / Corollary C.2 — W⁽¹⁾ (dense_1, bias embedded) scaled by α on the "
             "difficult net (head bias scaled too, so f → αf)", "",
             "| α | t(α)/t(1) (Mussay) | labels unchanged | max dev from αf | ε_add (ratio) | "
             "ε_mul | Mussay samples (ratio) | SiPP S ratio | coreset t ratio | "
             "t ratio, W⁽²⁾→W⁽²⁾/α |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["alpha_scaling"]:
        lines.append(f"| {r['alpha']:g} | {r['t_ratio']:.6g} | {r['labels_unchanged']:.4f} | "
                     f"{r['max_rel_dev_from_alpha_f']:.1e} | {r['epsilon_additive']:.4g} "
                     f"({r['epsilon_additive_ratio']:.4g}) | {r['epsilon_multiplicative']:.4g} | "
                     f"{fmt_count(r['mussay_samples'])} ({r['samples_ratio']:.3g}) | "
                     f"{r['sipp_ratio']:.6f} | {r['coreset_ratio']:.6f} | "
                     f"{r['t_rebalanced_ratio']:.6f} |")
    return "\n".join(lines)


# =========================================================================== figures

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# =========================================================================== main

def write_report(result, args, out):
    """report.md (printed too) and the four PNGs from a result (raw or re-read from JSON)."""
    tables = [cases_table(result), report_card_table(result, args),
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


def replot(args):
    out = pathlib.Path(args.out)
    result = unjson(json.loads((out / "results.json").read_text()))
    saved = argparse.Namespace(**result["args"])
    write_report(result, saved, out)
    return result


def _subset(ds, n):
    if not n or n >= len(ds):
        return ds
    return ds.subset(np.arange(n))


def run(args) -> dict:
    t_start = time.time()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_ds = _subset(data.load(args.dataset, "train", args.data_dir), args.limit_train)
    dev_ds = _subset(data.load(args.dataset, "test", args.data_dir), args.limit_dev)
    log(f"bounds report: {len(train_ds)} train / {len(dev_ds)} dev images, jax "
        f"{jax.__version__} on {jax.devices()[0].platform}; epochs {args.epochs}, re-train "
        f"{args.retrain_epochs}, L0 {args.l0_epochs}, fine-tune {args.ft_epochs}, "
        f"KD {args.kd_epochs}")
    log("[1/5] training cases")
    cases = train_cases(args, train_ds, dev_ds)
    log(f"({time.time() - t_start:.0f}s) [2/5] bounds on the final layer (epsilon-first and sparsity-first)")
    nets = {n: prepare(c, args, train_ds, dev_ds, train_ds.images) for n, c in cases.items()}
    extra = [n for n in nets if n.startswith("dropout")]
    plan = [(m, n) for m in METHODS
            for n in (["easy_weight" if m in WEIGHT_METHODS else "easy_neuron", "moderate",
                       "difficult"] + extra)]
    analyses = []
    for m, n in _progress(plan, "bounds"):
        t0 = time.time()
        r = analyse(nets[n], m, args)
        analyses.append(r)
        row = next(x for x in r["epsilon_first"] if x["fraction"] == args.guarantee)
        inf = r["info"]
        note = (f", S/max {inf['mean_S_over_max']:.3f}" if "mean_S_over_max" in inf else
                f", t {inf['total_sensitivity']:.4g}" + (f", μ(P) {inf['mu']:.4g}" if "mu" in inf
                                                          else ""))
        log(f"  {m:9s} on {n:11s}: ε {fmt_eps(row['epsilon'])}, samples "
            f"{fmt_count(row['samples'])}, sparsity {100 * row['sparsity']:.1f}%, "
            f"acc {row['accuracy']:.4f}{note}  ({time.time() - t0:.1f}s)")
    log(f"({time.time() - t_start:.0f}s) [3/5] fine-tuning gap (difficult case)")
    ft = finetune_gap(nets["difficult"], args, train_ds, dev_ds)
    log(f"({time.time() - t_start:.0f}s) [4/5] hidden vs output error (difficult case, first layer)")
    hid = hidden_vs_output(nets["difficult"], args, train_ds, dev_ds)
    log(f"({time.time() - t_start:.0f}s) [5/5] alpha-scaling (Lemma C.1)")
    alpha = alpha_scaling(nets["difficult"], args)
    case_rows = []
    for n, c in cases.items():
        head = np.asarray(c.params["head"]["kernel"])
        case_rows.append({"name": n, "description": c.description, "accuracy": c.accuracy,
                          "seconds": c.seconds,
                          "head_zero_fraction": float(np.mean(head == 0)),
                          "dead_neurons": int(np.sum(~np.any(head != 0, axis=1)))})
    result = {"args": vars(args), "cases": case_rows, "analyses": analyses,
              "finetune_gap": ft, "hidden_vs_output": hid, "alpha_scaling": alpha,
              "seconds": time.time() - t_start}
    (out / "results.json").write_text(json.dumps(jsonable(result), indent=1, allow_nan=False))
    write_report(result, args, out)
    log(f"wrote {out}/results.json, report.md and 4 PNGs in {time.time() - t_start:.0f}s")
    return json.loads((out / "results.json").read_text())


if __name__ == "__main__":
    _args = parse_args()
    replot(_args) if _args.replot else run(_args)
    sys.exit(0)
