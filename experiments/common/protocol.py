"""The Table-1 protocol: several dense nets, fine-tuning to convergence, a random-subset null
distribution, and paired statistics over nets.

* :func:`dense_nets` trains (or restores) one dense network per seed (init and data order).
* :func:`finetune` fine-tunes with plain cross-entropy (``"plain"``) or with logit
  distillation from the dense net (``"kd"``: ``(1-α)·CE + α·mean (z_s - z_t)²``) under one of
  two schedules (``--ft-schedule``, recorded in every row as ``ft_schedule``):
  ``"anneal"`` (the default) runs a fixed budget of ``ft_epochs`` epochs with the cosine
  horizon equal to that budget, so the learning rate reaches its floor (0) at the last epoch;
  ``"early_stop"`` (the recipe of the results committed before issue 33) sets the cosine
  horizon to ``max_epochs`` and stops when the validation error has not improved for
  ``patience`` epochs, usually long before the rate has decayed. Both keep the best
  validation epoch's weights.
* A method entry is ``name[:sampling][+norw]``; ``+norw`` drops that entry's count/(m q)
  re-weights (kept channels as they were), so re-weighting is a row of its own
  (:data:`LIKE_FOR_LIKE`).
* :func:`random_subset_errors` evaluates ``K`` uniformly random channel subsets at given
  widths right after pruning (no re-weighting): the null distribution a data-free criterion
  must beat; :func:`percentile` places a row in it.
* :class:`Rows` is the results file: one row per trial, written after every trial, so an
  interrupted run resumes where it stopped.
* :func:`add_arguments` / :func:`finish_arguments` / :func:`run` are the scripts' shared
  command line and driver; :func:`write_report` the table, sentences, plot and README block
  (:mod:`common.report`).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import numpy as np

import jaxprune
from experiments.common import harness, report
from jaxprune import checkpoint, data, structure, surgery, train
from jaxprune import methods as jaxprune_methods
from jaxprune.checkpoint import to_jsonable


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), for the record of where numbers came from."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# what a results file written before issue 33 (no such keys) was run with
LEGACY = {"ft_schedule": "early_stop", "ft_epochs": None, "ft_budgets": None}


class Rows:
    """``<out>/results.json`` = ``{"config": ..., "rows": [...], "cpu": ...}``, rewritten after
    each row.

    ``config`` holds the arguments that define the experiment (stored under ``config_name``);
    a resume with other values is refused rather than silently mixed. ``key``: the row fields
    that identify one trial (:meth:`has`). ``extra``: further top-level entries (kept from a
    resumed file, merged with what :meth:`save` is given, written every time)."""

    def __init__(self, out: pathlib.Path, config: dict, resume: bool,
                 key=("method", "ratio", "dense_seed", "seed", "finetune"),
                 config_name: str = "config"):
        self.path = out / "results.json"
        self.config = to_jsonable(config)
        self.fields, self.config_name = tuple(key), config_name
        self.rows: list[dict] = []
        self.extra: dict = {}
        if resume and self.path.exists():
            doc = json.loads(self.path.read_text())
            saved = doc.get(config_name)
            if isinstance(saved, dict) and config_name == "config":
                # files written before the fine-tune schedule was a setting used early_stop
                saved = {**{k: v for k, v in LEGACY.items() if k in self.config}, **saved}
            if saved != self.config:
                raise SystemExit(f"{self.path} was made with other settings "
                                 f"({doc.get(config_name)}); use another --out or drop "
                                 "--resume")
            self.rows = doc["rows"]
            self.extra = {k: v for k, v in doc.items() if k not in (config_name, "rows", "cpu")}

    def key(self, row: dict) -> tuple:
        return tuple(row[k] for k in self.fields)

    def has(self, **key) -> bool:
        return any(self.key(r) == self.key(key) for r in self.rows)

    def add(self, row: dict, extra: dict | None = None) -> None:
        self.rows.append(to_jsonable(row))
        self.save(extra)

    def save(self, extra: dict | None = None) -> dict:
        """Write the file; returns the document written."""
        self.extra.update(extra or {})
        doc = {self.config_name: self.config, "rows": self.rows, "cpu": cpu_name(),
               **self.extra}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(to_jsonable(doc), indent=1, allow_nan=False))
        tmp.replace(self.path)
        return doc


def dense_nets(model, recipe: str, train_ds, test_ds, out: pathlib.Path, seeds, epochs: int,
               batch_size: int, reuse: bool = False) -> dict[int, dict]:
    """``{seed: variables}``: one dense net per seed (``train.default_config(recipe)``).

    A net saved at ``out/dense_<seed>`` is reused only when ``reuse`` (``--resume``, or a
    ``--dense-dir`` named on purpose) and its recorded training identity (model, recipe,
    epochs, batch size, seed, training data checksum) equals this run's; any other saved net
    there is refused in one line rather than mixed in or overwritten."""
    nets = {}
    for seed in seeds:
        path = out / f"dense_{seed}"
        identity = {"recipe": recipe, "epochs": epochs, "batch_size": batch_size, "seed": seed,
                    "train_data": data.fingerprint(train_ds)}
        if path.exists():
            saved, variables, meta = checkpoint.load_model(path)
            recorded = (meta or {}).get("dense_identity")
            if saved != model or recorded != identity:
                differ = ("the model" if saved != model else "no recorded training config"
                          if recorded is None else ", ".join(
                              f"{k} {recorded.get(k)!r} vs {v!r}" for k, v in identity.items()
                              if recorded.get(k) != v))
                raise SystemExit(f"{path} holds a dense net trained otherwise ({differ}); "
                                 "use another --out or remove it")
            if not reuse:
                raise SystemExit(f"{path} holds a dense net of an earlier run; pass --resume "
                                 "to reuse it, or use another --out")
            print(f"dense net {seed}: reused from {path} (same training config)", flush=True)
            nets[seed] = variables
            continue
        cfg = train.default_config(recipe, epochs=epochs, batch_size=batch_size, seed=seed)
        t0 = time.time()
        res = train.fit(model, train_ds, cfg, out_dir=out / f"dense_{seed}_train",
                        eval_ds=test_ds, progress=False)
        print(f"dense net {seed}: trained in {time.time() - t0:.0f}s, test error "
              f"{harness.error(model, res.variables, test_ds):.2f}%", flush=True)
        checkpoint.save_model(path, model, res.variables, meta={"dense_identity": identity})
        nets[seed] = res.variables
    return nets


SCHEDULES = ("anneal", "early_stop")


def finetune(model, variables, train_ds, val_ds, *, recipe: str, teacher, seed: int,
             max_epochs: int, patience: int, lr: float, batch_size: int, mask=None,
             kd_alpha: float = 0.5, schedule: str = "early_stop", ft_epochs: int | None = None):
    """``(best variables, best epoch, epochs run)``, Adam + cosine.

    ``schedule="anneal"``: ``ft_epochs`` epochs, all of them run, the cosine horizon equal to
    ``ft_epochs`` (the rate is 0 after the last step). ``"early_stop"``: the cosine horizon is
    ``max_epochs``, stopped when the validation error has not improved for ``patience``
    epochs. Either way the weights of the best validation epoch are returned (epoch 0 = as
    pruned). ``teacher``: the ``(dense model, dense variables)`` that ``"kd"`` distils from."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    anneal = schedule == "anneal"
    horizon = ft_epochs if anneal else max_epochs
    if anneal and not (ft_epochs and ft_epochs > 0):
        raise ValueError("schedule='anneal' needs ft_epochs > 0")
    cfg = train.TrainConfig(optimizer="adam", learning_rate=lr, schedule="cosine",
                            epochs=horizon, batch_size=batch_size, seed=seed, log_every=0,
                            distill_alpha=kd_alpha if recipe == "kd" else 0.0,
                            distill_loss="logit_mse")
    best = {"err": harness.error(model, variables, val_ds), "epoch": 0, "run": 0,
            "vars": jax.device_get(variables)}

    def watch(epoch, so_far):
        best["run"] = epoch
        err = harness.error(model, so_far.variables, val_ds)
        if err < best["err"]:
            best.update(err=err, epoch=epoch, vars=jax.device_get(so_far.variables))
        return (not anneal) and epoch - best["epoch"] >= patience

    train.fit(model, train_ds, cfg, variables=variables, mask=mask, progress=False,
              teacher=teacher if recipe == "kd" else None, callbacks=[watch])
    return best["vars"], best["epoch"], best["run"]


def random_subset_errors(model, small, dense, widths: dict, test_ds, k: int,
                         seed: int) -> np.ndarray:
    """Test errors (%) of ``k`` random channel subsets at ``widths`` (no re-weighting);
    ``small`` is the smaller module of those widths."""
    struct = structure.from_model(model, dense, test_ds.images.shape[1:])
    groups = [g for g in struct.groups if g.name in widths]
    rng = np.random.default_rng(seed)
    errs = []
    for _ in range(k):
        kept = {g.name: np.sort(rng.choice(g.size, widths[g.name], replace=False))
                for g in groups}
        errs.append(harness.error(small, surgery.shrink(dense, struct.groups, kept), test_ds))
    return np.asarray(errs)


def percentile(value: float, null: np.ndarray) -> float:
    """Percent of the null distribution with a lower error than ``value`` (ties count half)."""
    null = np.asarray(null, np.float64)
    return float(100.0 * (np.sum(null < value) + 0.5 * np.sum(null == value)) / len(null))


NO_REWEIGHT = "+norw"
# like-for-like rows (issue 33): each differs from another row in one thing only — pvc with
# and without its count/(m q) re-weights; coreset top-k (no re-weights) vs coreset
# sparsity-first sampling with and without them
LIKE_FOR_LIKE = ("pvc+norw", "coreset:sparsity_first", "coreset:sparsity_first+norw")


def parse_entry(entry: str) -> tuple[str, str | None, bool]:
    """``"name[:sampling][+norw]"`` -> (method, sampling or None, keep the re-weights)."""
    base, norw = (entry[:-len(NO_REWEIGHT)], True) if entry.endswith(NO_REWEIGHT) else (
        entry, False)
    name, sampling = harness.parse_entry(base)
    return name, sampling, not norw


def _pruned(model, dense, entry, ratio, seed, data_batch, allocation, reweight, input_shape,
            unit="params"):
    """``(smaller model, its variables, mask or None, report, widths or None)`` of one prune;
    ``reweight=False`` (or an entry ending in ``+norw``) drops the sampled methods' count/(m q)
    re-weights (kept rows as they were)."""
    name, sampling, keep = parse_entry(entry)
    reweight = reweight and keep
    meth = jaxprune_methods.get(name)
    res = jaxprune.prune(dense, jax.random.key(seed), ratio, method=name, model=model,
                         input_shape=input_shape, sampling=sampling, allocation=allocation,
                         unit=unit if meth.kind == "channels" else "params",
                         data=data_batch if (meth.needs_data or meth.uses_data) else None)
    if meth.kind == "weights":
        return model, res.params, res.mask, res.report, None
    params = res.params if reweight else surgery.shrink(dense, res.groups, res.kept)
    return res.model(model), params, None, res.report, dict(res.widths)


def choose_budget(args, model, nets: dict, splits, rows: Rows, input_shape, data_batch,
                  reference: str) -> int:
    """``--ft-epochs auto``: the annealed fine-tune budget, chosen on the validation split.

    For every candidate in ``args.ft_budgets``: the reference method on the first dense net,
    at every ratio and recipe, fine-tuned with that budget; the candidate with the lowest mean
    validation error wins (ties: the shorter one). The test set is never looked at. The search
    is saved in ``results.json`` (``ft_budget_search``) and reused by ``--resume``."""
    if "ft_budget_search" in rows.extra:
        return int(rows.extra["ft_budget_search"]["chosen"])
    train_ds, val_ds, _ = splits
    recipes = ("plain", "kd") if args.finetune == "both" else (args.finetune,)
    seed, dense = next(iter(nets.items()))
    errors: dict[int, list[float]] = {}
    for ratio in args.ratios:
        small, params, mask, _, _ = _pruned(model, dense, reference, ratio, 0, data_batch,
                                            args.allocation, args.reweight == "on",
                                            input_shape, getattr(args, "unit", "params"))
        for budget in args.ft_budgets:
            for recipe in recipes:
                tuned, _, _ = finetune(small, params, train_ds, val_ds, recipe=recipe,
                                       teacher=(model, dense), seed=0,
                                       max_epochs=args.max_epochs, patience=args.patience,
                                       lr=args.finetune_lr, batch_size=args.batch_size,
                                       mask=mask, kd_alpha=args.kd_alpha, schedule="anneal",
                                       ft_epochs=budget)
                errors.setdefault(budget, []).append(harness.error(small, tuned, val_ds))
    mean = {b: float(np.mean(v)) for b, v in errors.items()}
    chosen = min(sorted(mean), key=mean.get)
    rows.save({"ft_budget_search": {"dense_seed": seed, "method": reference,
                                    "val_err": {str(b): e for b, e in mean.items()},
                                    "chosen": chosen}})
    print(f"fine-tune budget chosen on the validation split: {chosen} epochs "
          f"({', '.join(f'{b}: {e:.2f}%' for b, e in mean.items())})", flush=True)
    return chosen


def trials(args, model, nets: dict, splits, rows: Rows, input_shape, data_batch,
           reference: str | None = None) -> None:
    """Every (dense net, ratio, method, prune seed, recipe) row not yet in ``rows``."""
    train_ds, val_ds, test_ds = splits
    recipes = ("plain", "kd") if args.finetune == "both" else (args.finetune,)
    budget = args.ft_epochs
    if args.ft_schedule == "anneal" and budget == "auto":
        budget = choose_budget(args, model, nets, splits, rows, input_shape, data_batch,
                               reference or args.methods[0])
    for dense_seed, dense in nets.items():
        dense_err = harness.error(model, dense, test_ds)
        for ratio in args.ratios:
            null_cache: dict = {}
            for entry in args.methods:
                for seed in range(args.seeds):
                    key = dict(method=entry, ratio=ratio, dense_seed=dense_seed, seed=seed)
                    todo = [r for r in recipes if not rows.has(**key, finetune=r)]
                    if not todo:
                        continue
                    small, params, mask, report, widths = _pruned(
                        model, dense, entry, ratio, seed, data_batch, args.allocation,
                        args.reweight == "on", input_shape, getattr(args, "unit", "params"))
                    before = harness.error(small, params, test_ds)
                    pct, band = None, (None, None)
                    if widths is not None and args.random_subsets > 0:
                        wkey = tuple(sorted(widths.items()))
                        if wkey not in null_cache:
                            null_cache[wkey] = random_subset_errors(
                                model, small, dense, widths, test_ds, args.random_subsets,
                                seed=1000 + dense_seed)
                        pct = percentile(before, null_cache[wkey])
                        band = tuple(float(q) for q in np.percentile(null_cache[wkey], [5, 95]))
                    for recipe in todo:
                        t0 = time.time()
                        tuned, epochs, run_for = finetune(
                            small, params, train_ds, val_ds, recipe=recipe,
                            teacher=(model, dense), seed=seed, max_epochs=args.max_epochs,
                            patience=args.patience, lr=args.finetune_lr,
                            batch_size=args.batch_size, mask=mask, kd_alpha=args.kd_alpha,
                            schedule=args.ft_schedule, ft_epochs=budget)
                        row = {**key, "finetune": recipe, "dense_err": dense_err,
                               "err_before_ft": before,
                               "err_after_ft": harness.error(small, tuned, test_ds),
                               "pr_achieved": report["ratios"]["params_model"],
                               "random_percentile_before_ft": pct,
                               "random_err_p05": band[0], "random_err_p95": band[1],
                               "epochs_to_converge": epochs, "epochs_run": run_for,
                               "ft_schedule": args.ft_schedule, "ft_epochs": budget,
                               "widths": widths,
                               "kind": report["kind"],
                               "reweight": "on" if args.reweight == "on" and parse_entry(
                                   entry)[2] else "off",
                               "seconds": time.time() - t0}
                        rows.add(row)
                        print(f"  net {dense_seed} {entry:22s} ratio {ratio:.3f} seed {seed} "
                              f"{recipe:5s}: err {before:.2f}% -> {row['err_after_ft']:.2f}% "
                              f"({epochs} ep), random pct {pct}", flush=True)


# the arguments that define an experiment (a --resume must match them)
DEFINING = ("ratios", "methods", "allocation", "dense_seeds", "seeds", "finetune", "max_epochs",
            "patience", "finetune_lr", "kd_alpha", "random_subsets", "reweight", "train_epochs",
            "batch_size", "widths", "val_size", "data_batch", "dataset", "limit_train",
            "ft_schedule", "ft_epochs", "ft_budgets")


def _budget(text: str):
    """``--ft-epochs``: a positive number of epochs or ``auto``."""
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("--ft-epochs must be >= 1 or 'auto'")
    return value


def add_arguments(p: argparse.ArgumentParser, *, ratios, out: str) -> None:
    """The protocol's flags, shared by the MNIST scripts."""
    p.add_argument("--full", action="store_true",
                   help="the paper's protocol: 5 dense nets, every structured method and sipp, "
                        "both recipes, 30 epochs max, 100 random subsets")
    p.add_argument("--ratios", type=float, nargs="+", default=list(ratios))
    p.add_argument("--methods", nargs="+", default=None,
                   help="method[:sampling][+norw] entries, e.g. coreset:sparsity_first "
                        "pvc+norw magnitude (+norw: without the count/(m q) re-weights)")
    p.add_argument("--allocation", default="bound", choices=("bound", "uniform"))
    p.add_argument("--dense-seeds", type=int, default=None, help="independently trained nets")
    p.add_argument("--seeds", type=int, default=1, help="prune seeds per net")
    p.add_argument("--finetune", default=None, choices=("plain", "kd", "both"))
    p.add_argument("--ft-schedule", default="anneal", choices=SCHEDULES,
                   help="anneal: --ft-epochs epochs, cosine over exactly those epochs (the rate "
                        "reaches 0 at the end), best validation epoch kept; early_stop: the "
                        "recipe of the results committed before issue 33 (cosine over "
                        "--max-epochs, stopped after --patience epochs without improvement)")
    p.add_argument("--ft-epochs", type=_budget, default=None,
                   help="anneal: the fixed fine-tune budget (default: --max-epochs, at most "
                        "15), or 'auto': chosen among --ft-budgets on the validation split")
    p.add_argument("--ft-budgets", type=int, nargs="+", default=[5, 10, 15, 20],
                   help="--ft-epochs auto: the candidate budgets")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="fine-tune epochs at most (early_stop: the cosine horizon)")
    p.add_argument("--patience", type=int, default=3,
                   help="early_stop: stop when the validation error has not improved for this "
                        "many epochs")
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the logit-MSE term")
    p.add_argument("--random-subsets", type=int, default=None)
    p.add_argument("--reweight", default="on", choices=("on", "off"),
                   help="off: drop the sampled methods' count/(m q) re-weights")
    p.add_argument("--train-epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--val-size", type=int, default=5000,
                   help="training images held out as the validation split (not trained on)")
    p.add_argument("--data-batch", type=int, default=128,
                   help="validation images S given to data-informed methods (sipp, pfp)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=out)
    p.add_argument("--resume", action="store_true", help="keep the rows already in results.json")
    p.add_argument("--report-only", action="store_true",
                   help="no training: table, plot (and --readme) from results.json")
    p.add_argument("--readme", default=None, help="README to write the table block into")
    p.add_argument("--readme-block", default=None,
                   help="name of the README block (<!-- NAME:begin --> ... <!-- NAME:end -->)")
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)


def finish_arguments(p, args, methods, full_methods, reference: str):
    """Quick / ``--full`` defaults, and the method entries checked."""
    args.methods = args.methods or list(full_methods if args.full else methods)
    args.dense_seeds = args.dense_seeds or (5 if args.full else 1)
    args.finetune = args.finetune or ("both" if args.full else "plain")
    args.max_epochs = args.max_epochs or (30 if args.full else 8)
    if args.ft_schedule == "anneal":
        args.ft_epochs = args.ft_epochs or min(args.max_epochs, 15)
    if args.ft_epochs != "auto":
        args.ft_budgets = None          # only a setting of the search
    if args.random_subsets is None:
        args.random_subsets = 100 if args.full else 20
    for entry in args.methods:
        try:
            parse_entry(entry)
        except ValueError as err:
            p.error(str(err))
    if reference not in args.methods:
        p.error(f"--methods must include the reference method {reference!r}")
    return args


def run(args, make_model, recipe: str, reference: str, paper: dict, title: str,
        block: str = "table1") -> dict:
    """The whole protocol (or, with ``--report-only``, just its report) for one model."""
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        return write_report(json.loads((out / "results.json").read_text()), args, out,
                            reference, paper, title, block)
    full_train = data.head(data.load(args.dataset, "train", args.data_dir), args.limit_train)
    test_ds = data.load(args.dataset, "test", args.data_dir)
    train_ds, val_ds = data.train_val_split(full_train, min(args.val_size, len(full_train) // 2))
    print(f"{args.dataset}: {len(train_ds)} train / {len(val_ds)} validation / {len(test_ds)} "
          f"test images; CPU: {cpu_name()}", flush=True)
    model = make_model(train_ds)
    rows = Rows(out, {k: getattr(args, k) for k in DEFINING + getattr(args, "defining", ())},
                args.resume)
    nets = dense_nets(model, recipe, train_ds, test_ds, out, range(args.dense_seeds),
                      args.train_epochs, args.batch_size, reuse=args.resume)
    batch = harness.validation_batch(val_ds, args.data_batch)
    trials(args, model, nets, (train_ds, val_ds, test_ds), rows, train_ds.images.shape[1:],
           batch, reference)
    return write_report(rows.save(), args, out, reference, paper, title, block)


def schedule_note(doc: dict) -> str:
    """The fine-tuning recipe of ``doc`` in words, with what its rows say about the schedule
    (early_stop: the best epochs, the cosine rate there, and how many runs reached the end of
    the schedule)."""
    cfg, rows = doc["config"], doc["rows"]
    schedule = cfg.get("ft_schedule", LEGACY["ft_schedule"])
    kd = f"kd = logit MSE to the dense net, α = {cfg['kd_alpha']}"
    if schedule == "anneal":
        search = doc.get("ft_budget_search")
        chosen = (f"{search['chosen']} epochs, chosen among "
                  f"{', '.join(search['val_err'])} on the validation split (mean validation "
                  f"error of {search['method']}'s fine-tunes on net {search['dense_seed']}: "
                  + ", ".join(f"{b}: {e:.2f} %" for b, e in search["val_err"].items()) + ")"
                  if search else f"{cfg['ft_epochs']} epochs")
        return (f"Fine-tuning (schedule `anneal`): Adam {cfg['finetune_lr']}, a fixed budget of "
                f"{chosen}, with the cosine horizon equal to it (the rate reaches 0 at the last "
                f"step), the best validation epoch's weights kept; {kd}.")
    top, patience = cfg["max_epochs"], cfg["patience"]
    best = np.asarray([r["epochs_to_converge"] for r in rows], np.float64)
    stop = np.minimum(best + patience, top)
    rate = 0.5 * (1 + np.cos(np.pi * np.median(best) / top))
    return (f"Fine-tuning (schedule `early_stop`, the recipe before issue 33): Adam "
            f"{cfg['finetune_lr']}, cosine over {top} epochs, stopped when the validation "
            f"error had not improved for {patience} epochs, the best validation epoch's "
            f"weights kept; {kd}. The best epoch's median is {np.median(best):g}, where the "
            f"cosine rate is still {100 * rate:.0f} % of its peak; {int(np.sum(stop >= top))} "
            f"of {len(rows)} runs reached the end of the schedule, so these fine-tunes did not "
            "anneal.")


def widths_note(doc: dict, summary: list[dict]) -> str:
    """Which layers the channel methods leave whole at every ratio, and at which ratios the
    methods end at different widths — from the rows' widths."""
    cfg, rows = doc["config"], doc["rows"]
    channel = [r for r in rows if r.get("widths")]
    if not channel:
        return ""
    layers = list(channel[0]["widths"])
    dense = dict(zip(layers, cfg.get("widths") or []))
    whole = [layer for layer in layers if layer in dense
             and all(r["widths"][layer] == dense[layer] for r in channel)]
    pruned = [layer for layer in layers if layer not in whole]
    out = [f"Widths: channels kept per layer ({'/'.join(layers)}; dense "
           f"{'/'.join(str(dense.get(k, '?')) for k in layers)}), the range over nets where "
           f"they differ; `{cfg['allocation']}` allocation."]
    if whole:
        kept = "; ".join(
            f"PR {100 * ratio:.1f} %: " + "/".join(report.widths_cell(
                [r for r in channel if r["ratio"] == ratio]).split("/")[layers.index(k)]
                for k in pruned)
            for ratio in dict.fromkeys(r["ratio"] for r in channel))
        out.append(f"It keeps {', '.join(f'{k} ({dense[k]})' for k in whole)} whole at every "
                   f"ratio and for every method, so the table compares which "
                   f"{'/'.join(pruned)} channels each method keeps ({kept}).")
    differ = [ratio for ratio in dict.fromkeys(s["ratio"] for s in summary)
              if len({s["widths"] for s in summary if s["ratio"] == ratio
                      and s["widths"] != "—"}) > 1]
    if differ:
        out.append("The channel methods end at different widths at PR "
                   + ", ".join(f"{100 * r:.1f} %" for r in differ)
                   + ": their errors compare networks of different shapes at about the same "
                   "parameter count.")
    else:
        out.append("Every channel method ends at the same widths at each ratio.")
    return " ".join(out)


def report_text(doc: dict, reference: str, paper: dict) -> str:
    """The table, its notes and the sentences of one protocol run, from ``doc``
    (``results.json``) alone — what ``table.md`` and the README block hold."""
    rows, cfg = doc["rows"], doc["config"]
    summary = report.summarize(rows, reference)
    done = len({r["dense_seed"] for r in rows})
    nets = (f"{done} dense net(s)" if done == cfg["dense_seeds"] else
            f"the {done} dense net(s) finished of {cfg['dense_seeds']} planned (the run was "
            "interrupted; --resume continues it; the nets column counts each row's nets)")
    return (f"{report.markdown(summary, reference, paper)}\n\nErrors in % on the test set; "
            f"mean ± sample standard deviation (sd, n − 1) over {nets} (× {cfg['seeds']} prune "
            f"seed(s)); `{reference} − method`: paired over nets, 95 % t-interval, * = excludes "
            f"0 (negative = {reference} lower), † = also significant after Holm's correction "
            f"for the comparisons at that ratio and recipe, ‡ = also significant after Holm's "
            f"correction for every comparison in the table. {schedule_note(doc)} Random pct: "
            f"percentile of the error right after pruning among {cfg['random_subsets']} random "
            f"channel subsets at the same widths (lower = better than random). "
            f"{widths_note(doc, summary)} Measured on: {doc.get('cpu', 'unknown CPU')}.\n\n"
            f"{report.sentences(summary, reference)}\n")


def write_report(doc: dict, args, out: pathlib.Path, reference: str, paper: dict, title: str,
                 block: str) -> dict:
    """``table.md``, the plot and (``--readme``) the README block, from the rows alone."""
    rows = doc["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    summary = report.summarize(rows, reference)
    text = report_text(doc, reference, paper)
    (out / "table.md").write_text(text)
    print(text)
    report.plot(rows, summary, methods, out / "error_vs_ratio.png", title)
    print(f"\nwrote {out / 'results.json'}, {out / 'table.md'} and "
          f"{out / 'error_vs_ratio.png'}", flush=True)
    if args.readme:
        report.write_block(pathlib.Path(args.readme), args.readme_block or block, text)
    return {"rows": rows, "summary": summary, "config": doc["config"]}
