"""The main job (experiments/lenet300_mnist.py) end to end on a slice of real MNIST: two dense
nets, both fine-tune recipes, random subsets, resume and the report written from the rows."""
import json

import jax
import pytest

pytestmark = pytest.mark.slow   # trains nets, runs scripts or starts processes

ARGS = ["--limit-train", "2048", "--train-epochs", "1", "--max-epochs", "2", "--patience", "1",
        "--ratios", "0.9", "--methods", "coreset", "random", "--widths", "64", "32",
        "--dense-seeds", "2", "--finetune", "both", "--random-subsets", "5"]


def test_lenet300_protocol_tiny_resume_and_report(tmp_path, capsys, data_dir):
    from experiments import lenet300_mnist as mod
    out = tmp_path / "out"
    common = [*ARGS, "--data-dir", str(data_dir), "--out", str(out)]
    result = mod.run(mod.parse_args(common))
    text = capsys.readouterr().out
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 2                       # nets x methods x recipes
    need = {"method", "ratio", "dense_seed", "seed", "finetune", "dense_err", "err_before_ft",
            "err_after_ft", "pr_achieved", "random_percentile_before_ft", "epochs_to_converge"}
    assert all(need <= set(r) for r in rows)
    assert {r["dense_seed"] for r in rows} == {0, 1} and {r["finetune"] for r in rows} == {
        "plain", "kd"}
    by = {(r["method"], r["dense_seed"], r["finetune"]): r for r in rows}
    assert by["coreset", 0, "plain"]["widths"] == by["random", 0, "plain"]["widths"]
    assert all(abs(r["pr_achieved"] - 0.9) <= 0.01 for r in rows)
    assert all(0 <= r["random_percentile_before_ft"] <= 100 for r in rows)
    assert all(0 <= r["epochs_to_converge"] <= 2 for r in rows)
    # the paired difference over the 2 nets is reported, with its interval
    (vs,) = [s["vs_reference"] for s in result["summary"]
             if s["method"] == "random" and s["finetune"] == "plain"]
    assert vs["n"] == 2 and vs["lo"] <= vs["mean"] <= vs["hi"]
    assert "coreset − method" in text and (out / "error_vs_ratio.png").stat().st_size > 1000
    # resume: nothing is trained again, the rows are kept verbatim
    again = mod.run(mod.parse_args([*common, "--resume"]))
    assert again["rows"] == json.loads((out / "results.json").read_text())["rows"] == rows
    # the README block is written from results.json alone
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table1:begin -->\nold\n<!-- table1:end -->\nrest\n")
    mod.run(mod.parse_args([*common, "--report-only", "--readme", str(readme)]))
    body = readme.read_text()
    assert "old" not in body and "| PR target |" in body and body.endswith("rest\n")


def test_paired_p_value_and_holm_correction():
    import numpy as np
    from scipy import stats

    from experiments.common import report
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=6), rng.normal(size=6)
    d = report.paired(a, b)
    assert abs(d["p"] - stats.ttest_rel(a, b).pvalue) < 1e-12
    assert d["significant"] == (d["p"] < 0.05)      # the interval and the test agree
    # Holm: 0.01 <= 0.05/3 rejected, 0.02 <= 0.05/2 rejected, 0.04 <= 0.05 rejected
    assert report.holm([0.02, 0.04, 0.01]) == [True, True, True]
    # the step-down stops at the first failure: 0.03 > 0.05/2, so 0.04 is kept too
    assert report.holm([0.01, 0.03, 0.04]) == [True, False, False]
    assert report.holm([0.2, 0.5]) == [False, False] and report.holm([]) == []


def test_a_saved_dense_net_is_reused_only_under_resume_and_with_its_training_config(
        tmp_path, data_dir, capsys):
    from experiments.common import protocol
    from jaxprune import data
    from jaxprune.models import LeNet300100

    model = LeNet300100(widths=(16, 8))
    train_ds = data.head(data.load("mnist", "train", data_dir), 256)
    test_ds = data.head(data.load("mnist", "test", data_dir), 128)
    first = protocol.dense_nets(model, "lenet300", train_ds, test_ds, tmp_path, [0], 1, 64)
    again = protocol.dense_nets(model, "lenet300", train_ds, test_ds, tmp_path, [0], 1, 64,
                                reuse=True)
    assert "reused from" in capsys.readouterr().out
    assert all((a == b).all() for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)))
    with pytest.raises(SystemExit, match="pass --resume"):
        protocol.dense_nets(model, "lenet300", train_ds, test_ds, tmp_path, [0], 1, 64)
    with pytest.raises(SystemExit, match="epochs 1 vs 2"):   # the results would lie
        protocol.dense_nets(model, "lenet300", train_ds, test_ds, tmp_path, [0], 2, 64,
                            reuse=True)
    with pytest.raises(SystemExit, match="train_data"):
        protocol.dense_nets(model, "lenet300", data.head(train_ds, 128), test_ds, tmp_path,
                            [0], 1, 64, reuse=True)
