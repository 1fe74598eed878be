"""The bounds-paper experiment (experiments/bounds_report.py) end to end in --quick mode on a
slice of real MNIST, and properties of the JSON it writes."""
import json
import math

import pytest

pytestmark = pytest.mark.slow   # trains nets, runs scripts or starts processes


def _num(x):
    return math.inf if x == "inf" else x


@pytest.fixture(scope="module")
def report(tmp_path_factory, data_dir):
    from experiments import bounds_report as mod
    out = tmp_path_factory.mktemp("bounds")
    args = mod.parse_args(["--quick", "--data-dir", str(data_dir), "--out", str(out),
                           "--limit-train", "2000", "--limit-dev", "600"])
    returned = mod.run(args)
    result = json.loads((out / "results.json").read_text())
    return {"out": out, "result": result, "returned": returned,
            "args": args, "mod": mod}


def test_outputs_written(report, capsys):
    out, result = report["out"], report["result"]
    assert report["returned"] == result
    text = (out / "report.md").read_text()
    for header in ("Figure 2", "Sparsity-first", "Figure 3", "§5.2", "Lemma C.1",
                   "Training cases"):
        assert header in text
    for png in ("accuracy_vs_guarantee", "sparsity_first", "finetune_gap", "alpha_scaling"):
        assert (out / f"{png}.png").stat().st_size > 5000
    # --replot rebuilds the same report from the JSON alone
    mod = report["mod"]
    mod.replot(mod.parse_args(["--replot", "--out", str(out)]))
    assert (out / "report.md").read_text() == text


def test_cases_are_what_they_claim(report):
    cases = {c["name"]: c for c in report["result"]["cases"]}
    assert set(cases) == {"difficult", "moderate", "easy_weight", "easy_neuron"}
    assert cases["easy_weight"]["head_zero_fraction"] >= 0.95 - 1e-9
    assert cases["easy_neuron"]["dead_neurons"] == 90
    assert cases["difficult"]["head_zero_fraction"] == 0.0
    for c in cases.values():
        assert 0.5 < c["accuracy"] <= 1.0      # one epoch on 2,000 images still learns


def test_epsilon_first_rows(report):
    result = report["result"]
    fractions = result["args"]["fractions"]
    seen = set()
    for a in result["analyses"]:
        seen.add((a["method"], a["network"]))
        rows = a["epsilon_first"]
        assert [r["fraction"] for r in rows] == fractions
        eps = [r["epsilon"] for r in rows]
        assert all(e2 <= e1 for e1, e2 in zip(eps, eps[1:]))     # more guaranteed ⇒ smaller ε
        for r in rows:
            assert 0.0 <= r["sparsity"] <= 1.0
            assert 0.0 <= r["accuracy"] <= 1.0
            # ε came from the guarantee function: the Lemma 4.1 guarantee is met
            assert r["guaranteed_fraction"] >= r["fraction"] - 1e-12
            s = _num(r["samples"])
            assert r["vacuous"] == (s > r["layer_size"])
            assert r["observed"] == r["errors"][a["kind"]]
        size = rows[0]["layer_size"]
        assert size == (1010 if a["method"].startswith("sipp") else 100)
        if a["method"] == "sipp_det":
            # deterministic: samples = weights kept; sparsity follows exactly
            for r in rows:
                assert r["samples"] <= size
                assert r["sparsity"] >= 1 - r["samples"] / size - 1e-9
    assert len(seen) == 12
    easy = {a["method"]: a for a in result["analyses"] if a["network"].startswith("easy")}
    # the pre-pruned cases keep (at most) what was left after pre-pruning
    for m in ("sipp_rand", "sipp_det"):
        assert easy[m]["network"] == "easy_weight"
        assert all(r["sparsity"] >= 1 - 60 / 1010 - 1e-9 for r in easy[m]["epsilon_first"])
    for m in ("mussay", "coreset"):
        assert easy[m]["network"] == "easy_neuron"
        assert all(r["sparsity"] >= 0.9 - 1e-9 for r in easy[m]["epsilon_first"])


def test_coreset_bound_is_vacuous_and_reported_so(report):
    for a in report["result"]["analyses"]:
        if a["method"] != "coreset":
            continue
        # 100 linearly independent points in 300 dims can all be switched off: μ(P) = ∞
        assert a["info"]["mu"] == "inf" and a["info"]["mu_unbounded"]
        for r in a["epsilon_first"]:
            assert r["samples"] == "inf" and r["vacuous"] and r["limit_network"]


def test_sparsity_first_rows(report):
    result = report["result"]
    targets = result["args"]["sparsities"]
    unreachable = set()
    for a in result["analyses"]:
        assert [r["target_sparsity"] for r in a["sparsity_first"]] == targets
        for r in a["sparsity_first"]:
            if "unreachable" in r:
                unreachable.add((a["method"], a["network"], r["target_sparsity"]))
                continue
            assert 0.0 <= r["sparsity"] <= 1.0
            assert 0.0 <= r["guaranteed_fraction"] <= 1.0
            if a["method"] in ("sipp_rand", "mussay", "coreset") and \
                    not a["network"].startswith("easy"):
                assert abs(r["sparsity"] - r["target_sparsity"]) < 0.02
    # the paper's "runs forever" case: 50 % of an already 90 %-pruned layer
    assert ("mussay", "easy_neuron", 0.5) in unreachable
    assert ("coreset", "easy_neuron", 0.5) in unreachable
    assert ("sipp_rand", "easy_weight", 0.5) in unreachable
    assert ("sipp_det", "easy_weight", 0.5) not in unreachable     # deterministic always stops


def test_alpha_scaling_lemma_c1(report):
    rows = report["result"]["alpha_scaling"]
    assert sorted(r["alpha"] for r in rows) == sorted(report["args"].alphas)
    ms = []
    for r in sorted(rows, key=lambda r: r["alpha"]):
        a = r["alpha"]
        assert r["t_ratio"] == pytest.approx(a, rel=1e-4)              # t(α) = α t(1)
        assert r["labels_unchanged"] == 1.0                            # f → α f
        assert r["max_rel_dev_from_alpha_f"] < 1e-4
        assert r["epsilon_additive_ratio"] == pytest.approx(a, rel=1e-3)
        assert r["t_rebalanced_ratio"] == pytest.approx(1.0, rel=1e-4)
        assert r["sipp_ratio"] == pytest.approx(1.0, rel=1e-3)         # SiPP is scale-free
        ms.append(r["mussay_samples"])
    eps_mul = {round(r["epsilon_multiplicative"], 5) for r in rows}
    assert len(eps_mul) == 1                                           # multiplicative ε: fixed
    assert all(m2 < m1 for m1, m2 in zip(ms, ms[1:]))                  # Corollary C.2


def test_finetune_and_hidden_sections(report):
    result = report["result"]
    for r in result["finetune_gap"]:
        assert 0.0 <= r["guaranteed_fraction"] <= 1.0
        assert r["guaranteed_accuracy"] <= r["guaranteed_fraction"] + 1e-12
        for k in ("accuracy_pruned", "accuracy_finetuned", "accuracy_kd"):
            assert 0.0 <= r[k] <= 1.0
        assert r["error_pruned"]["additive"][0] > 0
    hid = result["hidden_vs_output"]
    assert hid["neuron"]["sparsity"] == pytest.approx(0.9, abs=1e-9)
    assert hid["weight"]["sparsity"] == pytest.approx(0.95, abs=0.01)
    assert hid["neuron"]["hidden_layer"] == "z2" and hid["weight"]["hidden_layer"] == "z1"
    for row in hid.values():
        for tag in ("pruned", "kd"):
            assert row[f"output_error_{tag}"]["additive"][0] >= 0
            assert row[f"hidden_error_{tag}"]["additive"][0] >= 0
