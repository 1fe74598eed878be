"""Smoke tests: the prune benchmark runs end to end in --quick mode (tiny widths)."""

import pytest

pytestmark = pytest.mark.slow   # trains nets, runs scripts or starts processes


@pytest.fixture(scope="module")
def bench():
    from experiments import bench_prune
    return bench_prune


def test_bench_prune_quick(bench, capsys):
    out = bench.main(["--quick", "--models", "lenet300", "--repeats", "3"])
    text = capsys.readouterr().out
    first, second = out["runs"][0]["calls"]
    assert first["total"] > 0 and second["total"] > 0
    assert abs(sum(first["wall"].values()) - first["total"]) < 1e-6
    assert abs(sum(first["cpu_phase"].values()) - first["cpu"]) < 1e-6
    assert first["result"].report["achieved_ratio"] > 0.8
    assert set(out["latency"]) == {"lenet300"}
    assert set(out["latency"]["lenet300"]) == {(lab, b) for lab in ("dense", "pruned")
                                               for b in (1, 1024)}
    assert "per-phase breakdown" in text and "speed-up" in text


def test_bench_prune_quick_resnet50(bench, capsys):
    """Tiny ResNet-50 (widths ÷ 16, 64×64 input): 62 % of ALL parameters removed through the
    bottlenecks' inner channels (and the stem) only; the pruned net runs at batch 1 and 64."""
    out = bench.main(["--quick", "--models", "resnet50", "--repeats", "1"])
    text = capsys.readouterr().out
    (run,) = out["runs"]
    res = run["calls"][0]["result"]
    rep = res.report
    assert abs(rep["ratios"]["params_model"] - 0.62) < 0.01  # the paper's whole-model PR
    assert rep["achieved_ratio"] == rep["ratios"]["params_model"]  # unit="params": whole model
    assert all(not g.residual for g in res.groups if g.name in res.widths)
    small = res.model(run["model"])
    assert small.stage_widths == run["model"].stage_widths  # residual channels untouched
    assert any(w < d for w, d in zip(small.widths, run["model"].widths))
    # coreset with PCA and top-k never uses the key: the timed 2nd call prunes the same channels
    again = run["calls"][1]["result"]
    assert again.widths == res.widths
    assert all((again.kept[g] == res.kept[g]).all() for g in res.kept)
    assert set(out["latency"]["resnet50"]) == {(lab, b) for lab in ("dense", "pruned")
                                               for b in (1, 64)}
    assert "Target: coreset on resnet50 ≤ 3 s on the first call" in text


def test_bench_cache_quick(bench):
    """``bench_prune --cache`` runs bench_cache: two fresh processes, cold and warm."""
    out = bench.main(["--quick", "--models", "lenet300", "--no-latency", "--cache"])
    (row,) = out["cache"]["rows"]
    assert row["cold"]["prune_s"] > 0 and row["warm"]["prune_s"] > 0
