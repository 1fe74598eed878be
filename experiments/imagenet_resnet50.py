"""Table 3 (main paper): coreset filter pruning of ResNet-50 on ImageNet (ILSVRC-2012) at 62 % PR.

GPU run (every local device, data-parallel; ImageNet prepared for TFDS under ~/tensorflow_datasets,
see Data below):

    JAXPRUNE_DATA_DIR=$HOME/tensorflow_datasets python experiments/imagenet_resnet50.py --out runs/imagenet_resnet50

Train the dense ResNet-50 with the project's ImageNet recipe (``jaxprune.train.default_config
('resnet50')``: SGD + Nesterov 0.9, lr 0.1, batch 256, cosine, 5 warm-up epochs, L2 1e-4, label
smoothing 0.1, 90 epochs; every value is a flag) or restore it from ``--out``, prune the
filters inside the bottlenecks (conv1/conv2 of every block, plus the stem, which feeds no
residual add; ``--prune-residual`` also prunes the residual stages incl. projection shortcuts
and their BatchNorm) with the coreset method so that 62 % of ALL parameters are removed (the
paper's PR; ``--ratio-of model`` calibrates it to ``prune``'s ratio over the pruned layers:
the inner channels do not index the projection shortcuts' outputs, the block outputs and the
2048×1000 head, so about 0.77 of the pruned layers' parameters are needed for 62 % of the
whole model), fine-tune, and print a table shaped like Table 3 (baseline err, pruned err best
and mean ± std over seeds, achieved whole-model PR and FR).

Data: ImageNet needs the manual TFDS preparation, once, on a machine with TensorFlow installed
(``pip install tensorflow tensorflow-datasets``; reading needs only ``tensorflow-datasets``,
``array_record`` and Pillow). Download ``ILSVRC2012_img_train.tar`` (~138 GB) and
``ILSVRC2012_img_val.tar`` (~6.3 GB) from image-net.org (registration needed) into
``<data_dir>/downloads/manual/`` (TFDS's default ``manual_dir``; ``ILSVRC2012_img_test.tar`` is
optional and unused here), then::

    tfds build imagenet2012 --file_format=array_record --data_dir=<data_dir>

which writes ``<data_dir>/imagenet2012/5.1.0/`` (``dataset_info.json``, ``features.json``,
``imagenet2012-{train,validation}.array_record-NNNNN-of-MMMMM``, ~150 GB). Nothing here
downloads (``tfds.data_source(..., download=False)``); point ``--data-dir`` or
``JAXPRUNE_DATA_DIR`` at ``<data_dir>``.

Memory: the loader decodes a whole split into float32 host memory (224×224×3×4 B = 602 KB per
image, plus the uint8 copy while loading), so the full train split (1.28 M images, ~770 GB) does
not fit: the default ``--train-split 'train[:5%]'`` (64,058 images, ~39 GB) plus the 50,000
validation images (~30 GB) need ~70 GB of host RAM. Training on that 5 % subset is not the
paper's full-ImageNet protocol; ``results.json`` records the splits used (``args``).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import numpy as np

# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments.common import filters  # noqa: E402
from jaxprune import data, metrics, models, train  # noqa: E402

PAPER = {"resnet50": {"ratios": (0.62,), "baseline": 23.78, "err": {0.62: 24.87}}}
EXTRA = ("ImageNet needs the manual step: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
         "in <data_dir>/downloads/manual/ first, then run the build above (with imagenet2012), ")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratios", type=float, nargs="+", default=list(PAPER["resnet50"]["ratios"]))
    p.add_argument("--train-split", default="train[:5%]")
    p.add_argument("--test-split", default="validation")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--dataset", default="imagenet2012")
    filters.add_common_flags(p, "resnet50", finetune_epochs=30)
    p.add_argument("--leave-stem", action="store_true", help="do not prune the stem conv")
    args = p.parse_args(argv)
    args.out = args.out or "results/imagenet_resnet50"
    args.epochs = args.epochs if args.epochs is not None else train.default_config(
        "resnet50").epochs
    return args


def main(argv=None):
    args = parse_args(argv)
    print(filters.DATA_HOWTO.format(name=args.dataset, extra=EXTRA), flush=True)
    size = args.image_size or args.resolution
    train_ds = data.head(data.load(args.dataset, args.train_split, data_dir=args.data_dir,
                                   image_size=size), args.limit_train)
    test_ds = data.head(data.load(args.dataset, args.test_split, data_dir=args.data_dir,
                                  image_size=size), args.limit_test)
    print(f"{len(train_ds)} train / {len(test_ds)} test examples at {size}x{size}, "
          f"{jax.device_count()} device(s): {jax.devices()[0].platform}", flush=True)
    overrides = filters.scaled_overrides("resnet50", args.width_divisor, args.num_blocks)
    model = models.get_model("resnet50", num_classes=train_ds.num_classes, **overrides)
    shape = (size, size, 3)
    n = metrics.param_count(jax.eval_shape(model.init, jax.random.key(0),
                                           np.zeros((1, *shape), np.float32)))
    print(f"== resnet50: {n} params, ratios {args.ratios}", flush=True)
    out = pathlib.Path(args.out)
    res = filters.run_model("resnet50", model, shape, train_ds, test_ds, args.ratios, args,
                            out / "resnet50", leave=("conv_stem",) if args.leave_stem else ())
    text = filters.table([res], PAPER)
    print(text)
    filters.write_results(out, [res], args, text)
    return [res]


if __name__ == "__main__":
    main()
