"""End-to-end smoke runs of the filter-pruning experiment scripts.

CIFAR-10 / ImageNet come from ``tfds.testing.mock_data`` (random images, nothing on disk);
tiny widths, 8 examples, one training step and one fine-tuning step per run; the CIFAR run
trains data-parallel on 2 of the simulated CPU devices of ``conftest.py``. LeNet-5 runs
on real MNIST in a tiny hidden mode (``--limit-train``).

Almost all of the time here is XLA compilation (tiny models, 8 images), so the runs are set up
to compile as little as possible without skipping what is checked:

* models are initialised under ``jax.threefry_partitionable(False)``: on XLA:CPU the jitted
  ``model.init`` (``jaxprune.train.init_variables``) with the default, partitionable threefry
  takes several times longer to compile (tiny VGG-16: ~50 s vs ~7 s on the loaded 2-core
  machine). Only the random bits of the initial weights differ; nothing asserted here depends
  on them.
* no channel group has exactly 2 channels (widths ÷ 4 for CIFAR, ÷ 16 for ImageNet): a 2-point
  group is the only tiny group that reaches the coreset peeling geometry, whose one vmapped
  kernel costs as much to compile as a train step. The scripts call ``prune`` exactly as
  before; the peeling itself is covered by the coreset, prune and residual tests.
* the ImageNet run fine-tunes for 0 epochs: its pruned ResNet-50 is built, fine-tuned through
  ``fit`` (no step), evaluated and tabulated by the same ``run_model`` as the CIFAR run, which
  fine-tunes both of its models for one data-parallel step.
* the second LeNet-5 run re-prunes at the first run's ratio and seed, so the network it
  fine-tunes is one that is already compiled; what it checks (the dense model is restored, not
  retrained) is unchanged.
"""
import json

import jax
import pytest

pytestmark = pytest.mark.slow   # trains nets, runs scripts or starts processes


TINY = ["--epochs", "1", "--batch-size", "8", "--limit-train", "8", "--limit-test", "8",
        "--seeds", "1", "--eval-batch-size", "8", "--augment", "crop_flip"]


def test_cifar_filters_end_to_end_on_mock_data(tmp_path, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    from experiments import cifar_filters as cf
    argv = ["--models", "vgg16", "resnet56", "--ratios", "0.5", "--width-divisor", "4",
            "--num-blocks", "1", "1", "1", "--out", str(tmp_path / "out"),
            "--data-dir", str(tmp_path / "tfds"), "--ft-epochs", "1", "--devices", "2", *TINY]
    with tfds.testing.mock_data(num_examples=8), jax.threefry_partitionable(False):
        results = cf.main(argv)
    text = capsys.readouterr().out
    assert "tfds build cifar10" in text.splitlines()[1]  # how to get the data, printed first
    assert "| Model | Method | Baseline Err. (%) | Pruned Err. (%) best (mean ± std)" in text
    assert [r["model"] for r in results] == ["vgg16", "resnet56"]
    for r in results:
        (row,) = r["rows"]
        assert row["target_ratio"] == 0.5 and len(row["runs"]) == 1
        assert 0 < row["pr"] < 100 and 0 < row["fr"] < 100
        assert 0 <= row["err_best"] <= 100 and r["rows"][0]["runs"][0]["report"]
    # VGG: every conv is pruned, so the whole-model PR is the target (up to rounding)
    assert abs(results[0]["rows"][0]["pr"] - 50) < 8
    # ResNet: only inner channels -> the stage widths are untouched
    cfg = results[1]["config"]
    assert cfg["num_blocks"] == [1, 1, 1] and cfg["shortcut"] == "A"
    assert cfg["stage_widths"] == [4, 8, 16]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["devices"] == 2 and len(saved["results"]) == 2
    assert (tmp_path / "out" / "table.md").read_text().startswith("| Model |")
    # dense checkpoints exist so a rerun restores instead of training; fine-tuning ran and
    # checkpointed too
    for name in ("vgg16", "resnet56"):
        assert any((tmp_path / "out" / name / "dense" / "checkpoints").iterdir())
        assert any((tmp_path / "out" / name / "pruned_0.5" / "seed0" / "checkpoints").iterdir())


def test_imagenet_resnet50_end_to_end_on_mock_data(tmp_path, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    from experiments import imagenet_resnet50 as im
    argv = ["--width-divisor", "16", "--num-blocks", "1", "1", "1", "1", "--image-size", "32",
            "--train-split", "train", "--test-split", "validation", "--prune-residual",
            "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "tfds"),
            "--ft-epochs", "0", *TINY]
    with tfds.testing.mock_data(num_examples=8), jax.threefry_partitionable(False):
        (res,) = im.main(argv)
    text = capsys.readouterr().out
    assert "downloads/manual" in text.split("==")[0]
    assert "| resnet50 | coreset (62% PR)" in text
    (row,) = res["rows"]
    run = row["runs"][0]
    assert 0 < row["pr"] < 100 and 0 < row["fr"] < 100
    assert abs(row["pr"] - 62) < 8  # --ratio-of model: 62% of ALL parameters
    # --prune-residual: the residual stages were pruned as well (stage widths shrank)
    assert any(k.endswith("conv3") or k == "conv_stem" for k in run["widths"])
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"][0]["rows"]
    assert any((tmp_path / "out" / "resnet50" / "dense" / "checkpoints").iterdir())


def test_lenet5_mnist_tiny_protocol(tmp_path, capsys, data_dir):
    from experiments import lenet5_mnist as lm
    tiny = ["--limit-train", "1024", "--train-epochs", "1", "--max-epochs", "1",
            "--ratios", "0.6", "--random-subsets", "3", "--data-dir", str(data_dir),
            "--out", str(tmp_path / "out")]
    args = lm.parse_args([*tiny, "--methods", "coreset", "l1_norm", "random"])
    result = lm.run(args)
    text = capsys.readouterr().out
    assert "| PR target | fine-tune | method |" in text
    rows = result["rows"]
    assert [r["method"] for r in rows] == ["coreset", "l1_norm", "random"]
    assert all(abs(r["pr_achieved"] - 0.6) < 0.02 for r in rows)  # the whole model's PR
    assert all(0 <= r["err_after_ft"] <= 100 and r["random_percentile_before_ft"] is not None
               for r in rows)
    out = tmp_path / "out"
    assert (out / "error_vs_ratio.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["rows"] == rows
    # a second run restores the dense net, and --resume keeps the finished rows
    again = lm.run(lm.parse_args([*tiny, "--methods", "coreset", "l1_norm", "random",
                                  "--resume"]))
    assert again["rows"] == rows and "dense net 0: trained" not in capsys.readouterr().out
