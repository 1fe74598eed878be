"""One pruning trial in the shared harness: prune the trained network with a method, fine-tune
with the same budget as every other method, and measure it, so that methods are compared like
with like.

A method entry is ``name`` or ``name:sampling`` (``coreset:sparsity_first``). Structured methods
(``Method.kind == "channels"``) shrink the network and fine-tune the smaller model;
unstructured ones (``kind == "weights"``: ``magnitude``, ``sipp``) return a masked network of the
dense shape that is fine-tuned with the mask held fixed. Data-informed methods
(``Method.needs_data``: ``sipp``, ``pfp``) and methods that use data when given
(``Method.uses_data``: ``pvc`` estimates its input-norm bound β) get ``data_batch`` — a small
batch ``S`` from the validation split, never from the test set.

Every method is measured the same way: ``pr`` = 1 − (non-zero parameters after pruning) /
(parameters of the dense model), over the whole model; ``fr`` = FLOPs removed by the shrunk
network (``None`` for a masked network: zeros in dense kernels remove no FLOPs without sparse
kernels).
"""
from __future__ import annotations

import time

import jax
import numpy as np

import jaxprune
from jaxprune import checkpoint, methods, metrics, train


def parse_entry(entry: str) -> tuple[str, str | None]:
    """``"name[:sampling]"`` -> (method name, sampling or None); unknown names fail early."""
    name, _, sampling = entry.partition(":")
    methods.get(name)
    return name, (sampling or None)


def error(model, variables, ds) -> float:
    """Test error in %."""
    return 100.0 * (1.0 - train.evaluate(model, variables, ds)["accuracy"])


def validation_batch(val_ds, size: int) -> np.ndarray:
    """The first ``size`` images of the validation split (the batch ``S`` of sipp/pfp)."""
    if size < 1 or len(val_ds) == 0:
        raise ValueError("data-informed methods need a non-empty validation batch "
                         f"(got size={size}, {len(val_ds)} validation images)")
    return np.asarray(val_ds.images[:size])


def trial(model, dense, entry: str, ratio: float, seed: int, train_ds, test_ds,
          ft_config: train.TrainConfig, *, data_batch=None, input_shape=None,
          **prune_options) -> dict:
    """Prune ``dense`` with ``entry`` at ``ratio`` (key = ``seed``), fine-tune, measure."""
    name, sampling = parse_entry(entry)
    meth = methods.get(name)
    t0 = time.time()
    res = jaxprune.prune(dense, jax.random.key(seed), ratio, method=name, model=model,
                         input_shape=input_shape, sampling=sampling,
                         data=data_batch if (meth.needs_data or meth.uses_data) else None,
                         **prune_options)
    prune_s = time.time() - t0
    shape = tuple(input_shape or train_ds.images.shape[1:])
    if meth.kind == "weights":
        small, mask, fr = model, res.mask, None
    else:
        small, mask = res.model(model), None
        fr = 1.0 - metrics.flops(small, res.params, shape) / metrics.flops(model, dense, shape)
    before = error(small, res.params, test_ds)
    ft = train.fit(small, train_ds, ft_config, variables=res.params, mask=mask, progress=False)
    after = error(small, ft.variables, test_ds)
    nonzero = metrics.nonzero_count(ft.variables)
    return {"ratio": ratio, "method": entry, "seed": seed, "kind": meth.kind,
            "pr": 1.0 - metrics.nonzero_count(res.params) / metrics.param_count(dense),
            "pr_after_ft": 1.0 - nonzero / metrics.param_count(dense),
            "fr": fr, "widths": list(getattr(small, "widths", ())) if mask is None else None,
            "nonzero_params": nonzero, "err_before_ft": before, "err_after_ft": after,
            "prune_seconds": prune_s, "report": checkpoint.to_jsonable(res.report)}


def grid(model, dense, args, train_ds, test_ds, data_batch, **prune_options) -> list[dict]:
    """Every (ratio, method, seed) of ``args.ratios × args.methods × range(args.seeds)``, each
    fine-tuned with Adam(``args.finetune_lr``, cosine) for ``args.finetune_epochs`` epochs."""
    rows = []
    for ratio in args.ratios:
        for entry in args.methods:
            for seed in range(args.seeds):
                cfg = train.TrainConfig(optimizer="adam", learning_rate=args.finetune_lr,
                                        schedule="cosine", epochs=args.finetune_epochs,
                                        batch_size=args.batch_size, seed=seed, log_every=0)
                row = trial(model, dense, entry, ratio, seed, train_ds, test_ds, cfg,
                            data_batch=data_batch, allocation=args.allocation, **prune_options)
                rows.append(row)
                print(describe(row), flush=True)
    return rows


def describe(row: dict) -> str:
    """One progress line for a finished trial."""
    shape = f"widths {tuple(row['widths'])}" if row["widths"] is not None else "masked"
    fr = "–" if row["fr"] is None else f"{100 * row['fr']:.2f}%"
    return (f"  {row['method']:24s} ratio {row['ratio']:.3f} seed {row['seed']}: {shape} "
            f"PR {100 * row['pr']:.2f}% FR {fr}  err before FT {row['err_before_ft']:.2f}% "
            f"after FT {row['err_after_ft']:.2f}%  (prune {row['prune_seconds']:.1f}s)")

