"""The main job (experiments/lenet300_mnist.py) end to end on a slice of real MNIST."""
import json

import _scripts


def test_lenet300_table1_tiny(tmp_path, capsys, data_dir):
    mod = _scripts.load("lenet300_mnist")
    out = tmp_path / "out"
    args = mod.parse_args(["--limit-train", "2048", "--train-epochs", "1", "--finetune-epochs", "1",
                           "--ratios", "0.9", "--methods", "coreset", "random",
                           "--widths", "64", "32", "--data-dir", str(data_dir), "--out", str(out)])
    result = mod.run(args)
    text = capsys.readouterr().out
    assert "| Method | PR target (%) | PR achieved (%)" in text
    rows = result["rows"]
    assert [r["method"] for r in rows] == ["coreset", "random"]
    assert rows[0]["widths"] == rows[1]["widths"]           # same budget for every method
    assert all(abs(r["achieved_pr"] - 0.9) <= 0.01 for r in rows)
    assert all(0 <= r["err_after_ft"] <= 100 and 0 <= r["err_before_ft"] <= 100 for r in rows)
    assert json.loads((out / "results.json").read_text())["baseline_err"] == result["baseline_err"]
    assert (out / "error_vs_ratio.png").stat().st_size > 1000
