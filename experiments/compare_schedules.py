"""How the Table 1 numbers move when fine-tuning anneals: the rows of an ``--ft-schedule
anneal`` run matched one to one (method, ratio, dense net, prune seed, recipe) with the
committed ``early_stop`` run, on the same dense nets (checked: equal dense errors).

Per (method, recipe): the number of matched rows and the mean, min and max of
``err_after_ft(anneal) − err_after_ft(early_stop)`` in points (negative: annealing lowered
the error), and the mean fine-tune epochs each schedule kept.

    python experiments/compare_schedules.py \\
        --anneal experiments/results/lenet300_mnist_anneal \\
        --early-stop experiments/results/lenet300_mnist
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

KEY = ("method", "ratio", "dense_seed", "seed", "finetune")


def matched(anneal: list[dict], early: list[dict]) -> list[tuple[dict, dict]]:
    """``(anneal row, early_stop row)`` pairs of the same trial; the dense nets must agree."""
    by_key = {tuple(r[k] for k in KEY): r for r in early}
    pairs = [(r, by_key[tuple(r[k] for k in KEY)]) for r in anneal
             if tuple(r[k] for k in KEY) in by_key]
    bad = [a for a, e in pairs if abs(a["dense_err"] - e["dense_err"]) > 1e-9]
    if bad:
        raise SystemExit(f"{len(bad)} matched rows come from different dense nets; the runs "
                         "are not comparable")
    return pairs


def table(pairs: list[tuple[dict, dict]]) -> str:
    cells: dict[tuple, list] = {}
    for a, e in pairs:
        cells.setdefault((a["method"], a["finetune"]), []).append((a, e))
    lines = ["| method | recipe | rows | nets | anneal − early_stop (points), mean [min, max] | "
             "epochs kept: early_stop / anneal |", "|---|---|---:|---:|---|---|"]
    for (method, recipe), rows in cells.items():
        d = np.array([a["err_after_ft"] - e["err_after_ft"] for a, e in rows])
        nets = len({a["dense_seed"] for a, _ in rows})
        kept = (np.mean([e["epochs_to_converge"] for _, e in rows]),
                np.mean([a["epochs_to_converge"] for a, _ in rows]))
        lines.append(f"| {method} | {recipe} | {len(rows)} | {nets} | {d.mean():+.2f} "
                     f"[{d.min():+.2f}, {d.max():+.2f}] | {kept[0]:.1f} / {kept[1]:.1f} |")
    every = np.array([a["err_after_ft"] - e["err_after_ft"] for a, e in pairs])
    lines.append("")
    lines.append(f"Over all {len(pairs)} matched rows: mean {every.mean():+.2f} points, "
                 f"{int((every < 0).sum())} lower and {int((every > 0).sum())} higher with "
                 "annealing.")
    return "\n".join(lines)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--anneal", default="experiments/results/lenet300_mnist_anneal")
    p.add_argument("--early-stop", default="experiments/results/lenet300_mnist")
    args = p.parse_args(argv)
    anneal = json.loads((pathlib.Path(args.anneal) / "results.json").read_text())
    early = json.loads((pathlib.Path(args.early_stop) / "results.json").read_text())
    text = table(matched(anneal["rows"], early["rows"]))
    (pathlib.Path(args.anneal) / "vs_early_stop.md").write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
