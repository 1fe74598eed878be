"""The Frank-Wolfe study (experiments/frank_wolfe_mnist.py) on a slice of real MNIST:
table and plots written, sparsity as requested, rows saved per (seed, budget), resume."""
import json

import pytest

pytestmark = pytest.mark.slow   # trains nets, runs scripts or starts processes


@pytest.fixture(scope="module")
def fwm():
    from experiments import frank_wolfe_mnist
    return frank_wolfe_mnist


def _argv(data_dir, out, seeds):
    return ["--budgets", "1", "--seeds", str(seeds), "--train-subset", "512",
            "--test-subset", "256", "--batch-size", "128", "--latency-batch", "16",
            "--sparsity", "0.8", "--data-dir", str(data_dir), "--out", str(out)]


def test_frank_wolfe_study_tiny_and_resume(fwm, tmp_path, data_dir, capsys, monkeypatch):
    out = tmp_path / "fw"
    res = fwm.main(_argv(data_dir, out, 1))
    assert "| pre-train ep | method |" in capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] and len(saved["runs"]) == 1
    rows = saved["runs"][0]["methods"]
    assert set(rows) == {"dense", *fwm.METHODS}
    for m in ("magnitude", "fw", "fw_momentum"):       # unstructured: exactly the target
        assert rows[m]["kernel_sparsity"] == pytest.approx(0.8, abs=0.01)
        assert 0.0 <= rows[m]["acc"] <= 1.0
    assert 0.0 < rows["fw_mom_struct"]["model_sparsity"] < 1.0     # a genuinely smaller net
    assert all(r["latency"] > 0 and r["latency_dense"] == rows["dense"]["latency"]
               for r in rows.values())
    for png in ("accuracy_vs_pretraining.png", "sparsity_vs_pretraining.png"):
        assert (out / png).stat().st_size > 1000
    # the compact table's cells are the saved accuracies; --report-only re-prints the same
    acc = {m: f"{100 * rows[m]['acc']:.2f}±0.00" for m in rows}
    line = next(x for x in (out / "table.md").read_text().splitlines() if x.startswith("| 1 |"))
    assert line == "| 1 | " + " | ".join(acc[m] for m in ("dense", *fwm.METHODS)) + " |"
    table_md = (out / "table.md").read_text()
    fwm.main(_argv(data_dir, out, 1) + ["--report-only"])
    assert (out / "table.md").read_text() == table_md

    # resume: the finished seed is kept verbatim and nothing is trained again
    def no_training(*a, **k):
        raise AssertionError("a finished seed was trained again")
    monkeypatch.setattr(fwm, "pretrain", no_training)
    res2 = fwm.main(_argv(data_dir, out, 1) + ["--resume"])
    assert res2["runs"] == json.loads(json.dumps(res["runs"], default=float))
    # a missing seed is run (and trains): the patched trainer proves it is reached
    with pytest.raises(AssertionError, match="trained again"):
        fwm.main(_argv(data_dir, out, 2) + ["--resume"])

    # a resume with other arguments is refused, not silently mixed
    with pytest.raises(ValueError, match="other arguments"):
        fwm.main(_argv(data_dir, out, 2)[:-2] + ["--out", str(out), "--sparsity", "0.5",
                                                 "--resume"])
