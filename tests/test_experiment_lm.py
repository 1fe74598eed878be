"""experiments/lm_pystdlib.py on a tiny synthetic byte corpus: every (width, depth) row per
net, finite bits per byte, paired statistics against the reference, --report-only rewrites
the same table, --resume adds nothing and a resume with other settings is refused."""
import gzip
import json
import math

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # trains two tiny LMs

TINY = ["--nets", "2", "--train-steps", "4", "--batch-size", "4", "--seq-len", "16", "--dim",
        "16", "--layers", "3", "--heads", "2", "--kv-heads", "1", "--mlp-dim", "24",
        "--ratios", "0.5", "--methods", "coreset", "l1_norm", "wanda_sp", "--refit", "both",
        "--depth", "1", "--calib-windows", "4", "--eval-windows", "8", "--distill-steps", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    folder = root / "bytes"
    folder.mkdir()
    rng = np.random.default_rng(0)
    text = "".join(f"def f{i}(x):\n    return x * {i} + {rng.integers(9)}\n" for i in range(400))
    for split, part in (("train", text), ("valid", text[:3000]), ("test", text[3000:6000])):
        with gzip.open(folder / f"{split}.txt.gz", "wt") as f:
            f.write(part)
    return root


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    from experiments import lm_pystdlib as exp
    out = tmp_path_factory.mktemp("lm")
    args = TINY + ["--dataset", "bytes", "--data-dir", str(corpus), "--out", str(out)]
    doc = exp.main(args)
    return exp, args, out, doc


def test_every_row_is_there_with_finite_bits_per_byte(run):
    exp, _, out, doc = run
    rows = doc["rows"]
    # per net: 1 ratio x 3 methods x 2 refits + 1 depth x 2 scores
    assert len(rows) == 2 * (3 * 2 + 2)
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("dense_bpb", "bpb_pruned", "bpb_distilled"))
        assert r["params_pruned"] < r["params_dense"]
    depth = [r for r in rows if r["kind"] == "depth"]
    assert {r["depth_form"] for r in depth} == {"rebuilt"}
    assert (out / "table.md").exists() and (out / "bits_per_byte.png").exists()


def test_paired_differences_are_against_the_reference(run):
    exp, _, _, doc = run
    summary = exp.summarize(doc["rows"])
    for s in summary:
        reference = s["method"] == ("coreset" if s["kind"] == "width" else "block_influence")
        assert (not s["diffs"]) == reference
        for d in s["diffs"].values():
            assert d["n"] == 2 and d["lo"] <= d["mean"] <= d["hi"]


def test_report_only_and_resume_reproduce_the_run(run):
    exp, args, out, doc = run
    table = (out / "table.md").read_text()
    exp.main(args + ["--report-only"])
    assert (out / "table.md").read_text() == table
    again = exp.main(args + ["--resume"])
    assert again["rows"] == json.loads(json.dumps(doc["rows"]))
    other = list(args)
    other[other.index("--distill-steps") + 1] = "3"
    with pytest.raises(SystemExit, match="other settings"):
        exp.main(other + ["--resume"])
