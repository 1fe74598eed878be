"""experiments/reconstruct_mnist.py end to end on a slice of real MNIST."""
import json

import pytest

pytestmark = pytest.mark.slow   # trains nets, runs scripts or starts processes


def test_reconstruct_mnist_tiny(tmp_path, data_dir):
    from experiments import reconstruct_mnist as mod
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


def test_reconstruct_mnist_resumes_and_feeds_data_informed_methods(tmp_path, data_dir):
    from experiments import reconstruct_mnist as mod
    argv = ["--limit-train", "2048", "--train-epochs", "1", "--sizes", "32", "--methods",
            "coreset", "pfp", "--widths", "32", "16", "--data-dir", str(data_dir),
            "--out", str(tmp_path)]
    first = mod.run(mod.parse_args(argv))["rows"]
    assert {r["method"] for r in first} == {"coreset", "pfp"}
    doc = json.loads((tmp_path / "results.json").read_text())
    doc["rows"] = doc["rows"][:1]            # as if the run had been killed after one row
    (tmp_path / "results.json").write_text(json.dumps(doc))
    again = mod.run(mod.parse_args([*argv, "--resume"]))["rows"]
    assert again[0] == doc["rows"][0] and len(again) == 2
    assert again[1]["err_refit"] == first[1]["err_refit"]   # the same trial, redone
    try:
        mod.run(mod.parse_args([*argv, "--resume", "--ratio", "0.5"]))
    except SystemExit as err:
        assert "other settings" in str(err)
    else:
        raise AssertionError("a resume with other settings must be refused")
