"""experiments/reconstruct_mnist.py end to end on a slice of real MNIST."""
import json

import _scripts


def test_reconstruct_mnist_tiny(tmp_path, data_dir):
    mod = _scripts.load("reconstruct_mnist")
    out = tmp_path / "out"
    result = mod.run(mod.parse_args([
        "--limit-train", "2048", "--train-epochs", "1", "--sizes", "32", "96", "--methods",
        "coreset", "random", "--widths", "64", "32", "--data-dir", str(data_dir),
        "--out", str(out)]))
    rows = result["rows"]
    assert len(rows) == 2 * 2 and {r["size"] for r in rows} == {32, 96}
    for r in rows:  # the refit fits the dense pre-activations better than the plain prune
        assert all(v["rel_err_after"] < v["rel_err_before"] for v in r["refit"].values())
    assert json.loads((out / "results.json").read_text())["rows"] == rows
    assert "size of S" in (out / "table.md").read_text()
    assert (out / "error_vs_data.png").stat().st_size > 1000
