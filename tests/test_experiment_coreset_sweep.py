"""experiments/coreset_sweep.py end to end on a slice of real MNIST."""
import json

import pytest

pytestmark = pytest.mark.slow   # trains nets, runs scripts or starts processes


def test_coreset_sweep_tiny_resume(tmp_path, data_dir):
    from experiments import coreset_sweep as mod
    argv = ["--limit-train", "2048", "--train-epochs", "1", "--dense-seeds", "2", "--dims", "2",
            "10", "--ratios", "0.9", "--widths", "48", "24", "--data-dir", str(data_dir),
            "--out", str(tmp_path)]
    result = mod.run(mod.parse_args(argv))
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 2                     # nets x dims x allocations
    assert {(r["projection_dim"], r["allocation"]) for r in rows} == {
        (2, "bound"), (2, "uniform"), (10, "bound"), (10, "uniform")}
    assert all(0 <= r["val_err_ft"] <= 100 and 0 <= r["val_err_before"] <= 100 for r in rows)
    text = (tmp_path / "table.md").read_text()
    pooled = {}
    for r in rows:
        pooled.setdefault((r["projection_dim"], r["allocation"]), []).append(r["val_err_ft"])
    best = min(pooled, key=lambda k: sum(pooled[k]))
    assert f"k = {best[0]}, {best[1]}" in text       # the choice is the measured minimum
    doc = json.loads((tmp_path / "results.json").read_text())
    doc["rows"] = doc["rows"][:3]
    (tmp_path / "results.json").write_text(json.dumps(doc))
    again = mod.run(mod.parse_args([*argv, "--resume"]))["rows"]
    assert again[:3] == doc["rows"] and len(again) == len(rows)
