"""Head and MLP-unit pruning of a small ViT on real MNIST: coreset vs l1_norm vs random.

Train the Linen ViT (``jaxprune.models`` ``"vit"``) on MNIST-train minus a validation split,
prune 50 % of the whole model's parameters with each method and ``--seeds`` prune seeds —
whole attention heads (the head axis of the q/k/v kernels and the rows of the output
projection) and MLP hidden units; the LayerNorm'd residual stream stays whole — then
fine-tune every pruned net with the same budget. Prints and saves a table: test accuracy
before / after fine-tuning (mean ± std over seeds), heads and MLP units left, parameters,
kernel FLOPs (Dense/DenseGeneral/Conv; the attention score products are not counted) and
batch-256 inference latency, dense and pruned timed interleaved.

    JAXPRUNE_DATA_DIR=../shared/data python experiments/vit_mnist.py [--quick]

Writes ``<out>/results.json`` and ``<out>/table.md``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jaxprune  # noqa: E402
from experiments.common import harness, report  # noqa: E402
from jaxprune import data, metrics, models, train  # noqa: E402
from jaxprune.checkpoint import to_jsonable  # noqa: E402

METHODS = ("coreset", "l1_norm", "random")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10k images, 1 seed, short training")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--train-epochs", type=int, default=None)
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--mlp", type=int, default=128)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/vit_mnist")
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.train_epochs = args.train_epochs or (2 if args.quick else 10)
    args.finetune_epochs = args.finetune_epochs or (1 if args.quick else 3)
    if args.quick and args.limit_train is None:
        args.limit_train = 10000
    return args


def _accuracy(model, variables, ds) -> float:
    return 100.0 - harness.error(model, variables, ds)


def _latency(pairs, x, rounds: int = 3) -> dict:
    """Median latency per network, dense and pruned timed in alternating rounds."""
    times = {name: [] for name in pairs}
    for _ in range(rounds):
        for name, (m, v) in pairs.items():
            times[name].append(metrics.measure_latency(
                lambda vv, xx, m=m: m.apply(vv, xx, train=False), v, x, repeats=5, warmup=1))
    return {name: float(min(t)) for name, t in times.items()}


def run(args) -> dict:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    full = data.head(data.load("mnist", "train", args.data_dir), args.limit_train)
    test_ds = data.load("mnist", "test", args.data_dir)
    train_ds, _ = data.train_val_split(full, min(5000, len(full) // 5))
    model = models.get_model("vit", patch=args.patch, dim=args.dim, depth=args.depth,
                             heads=args.heads, mlp=args.mlp, num_classes=10)
    cfg = train.TrainConfig(optimizer="adam", learning_rate=1e-3, schedule="cosine",
                            epochs=args.train_epochs, batch_size=args.batch_size, seed=0,
                            log_every=0)
    t0 = time.time()
    dense = train.fit(model, train_ds, cfg, progress=False).variables
    dense_acc = _accuracy(model, dense, test_ds)
    print(f"dense ViT: {dense_acc:.2f}% test accuracy, trained in {time.time() - t0:.0f}s",
          flush=True)
    shape = train_ds.images.shape[1:]
    x = jnp.asarray(np.asarray(test_ds.images[:256]))
    rows = []
    for method in args.methods:
        for seed in range(args.seeds):
            res = jaxprune.prune(dense, jax.random.key(seed), args.ratio, method=method,
                                 model=model, input_shape=shape)
            small = res.model(model)
            before = _accuracy(small, res.params, test_ds)
            ft = train.TrainConfig(optimizer="adam", learning_rate=5e-4, schedule="cosine",
                                   epochs=args.finetune_epochs, batch_size=args.batch_size,
                                   seed=seed, log_every=0)
            tuned = train.fit(small, train_ds, ft, variables=res.params, progress=False)
            lat = _latency({"dense": (model, dense), "pruned": (small, tuned.variables)}, x)
            rows.append({"method": method, "seed": seed, "acc_before_ft": before,
                         "acc_after_ft": _accuracy(small, tuned.variables, test_ds),
                         "widths": res.widths, "frozen": res.report["frozen"],
                         "params": res.report["params_after"],
                         "params_dense": res.report["params_before"],
                         "flops": res.report["flops_after"],
                         "flops_dense": res.report["flops_before"],
                         "pr": res.report["achieved_ratio"],
                         "latency_s": lat["pruned"], "latency_dense_s": lat["dense"]})
            print(f"  {method:8s} seed {seed}: {before:.2f}% -> {rows[-1]['acc_after_ft']:.2f}%"
                  f", PR {rows[-1]['pr']:.3f}, widths {res.widths}", flush=True)
    result = {"dense_acc": dense_acc, "rows": rows, "args": vars(args)}
    table = format_table(result)
    (out / "results.json").write_text(json.dumps(to_jsonable(result), indent=1))
    (out / "table.md").write_text(table + "\n")
    print(table)
    return result


def format_table(result) -> str:
    lines = ["| method | acc before FT (%) | acc after FT (%) | widths (heads / MLP units) | "
             "params | kernel FLOPs | latency b256 pruned / dense |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for method in dict.fromkeys(r["method"] for r in result["rows"]):
        rs = [r for r in result["rows"] if r["method"] == method]
        b = np.array([r["acc_before_ft"] for r in rs])
        a = np.array([r["acc_after_ft"] for r in rs])
        speed = np.mean([r["latency_s"] / r["latency_dense_s"] for r in rs])
        lines.append(f"| {method} | {report.pm(b)} | {report.pm(a)} | {rs[0]['widths']} | "
                     f"{rs[0]['params']:,} / "
                     f"{rs[0]['params_dense']:,} | {rs[0]['flops']:,} / {rs[0]['flops_dense']:,}"
                     f" | {speed:.2f}× |")
    lines.append(f"\nDense ViT test accuracy {result['dense_acc']:.2f} %; mean ± sample sd "
                 f"(n − 1) over {len({r['seed'] for r in result['rows']})} prune seed(s); "
                 "widths, parameters and FLOPs of the first seed.")
    return "\n".join(lines)


if __name__ == "__main__":
    harness.main(run, parse_args())
