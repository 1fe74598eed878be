"""Theorem 2.6 certificates of an actual prune (``jaxprune.bounds.certify``)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import bounds, checkpoint, cli
from jaxprune.models import LeNet300100


def _mlp_params(first_kernel, first_bias, width_out=3, seed=0):
    rng = np.random.default_rng(seed)
    c = first_kernel.shape[1]
    return {"dense_0": {"kernel": first_kernel, "bias": first_bias},
            "dense_1": {"kernel": rng.standard_normal((c, width_out)).astype(np.float32),
                        "bias": np.zeros(width_out, np.float32)}}


def test_independent_neurons_have_unbounded_mu_and_no_epsilon():
    rng = np.random.default_rng(0)
    params = _mlp_params(rng.standard_normal((20, 8)).astype(np.float32),
                         rng.standard_normal(8).astype(np.float32))
    res = jaxprune.prune(params, jax.random.key(0), 0.3)
    cert = bounds.certify(res)
    (group,) = cert.values()
    assert group["rank"] == 8 and group["mu"] == float("inf") and group["epsilon"] is None
    assert group["mu_certificate"] == "lp"


def test_a_symmetric_point_set_has_finite_mu_and_an_epsilon():
    """With every neuron's negation in the layer, every query switches off exactly as much as
    it switches on: μ(P) = 1 — finite, so Theorem 2.6 gives an ε for the draws made."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    params = _mlp_params(np.concatenate([w, -w], 1), np.concatenate([b, -b]))
    res = jaxprune.prune(params, jax.random.key(0), 0.3)
    (group,) = bounds.certify(res).values()
    assert 0.9 < group["mu"] <= 1.0 + 1e-6 and group["epsilon"] > 0
    assert group["draws"] >= res.widths["dense_0"]


@pytest.mark.slow
def test_observed_errors_and_the_cli_flag(tmp_path, capsys):
    model = LeNet300100(widths=(16, 8))
    v = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    S = np.asarray(jax.random.uniform(jax.random.key(1), (16, 28, 28, 1)))
    res = jaxprune.prune(v, jax.random.key(2), 0.5, model=model)
    cert = bounds.certify(res, model=model, data=S)
    observed = cert["dense_0"]["observed"]["dense_1"]
    assert 0 < observed["mean_rel_err"] <= observed["max_rel_err"]
    with pytest.raises(ValueError, match="structured"):
        bounds.certify(jaxprune.prune(v, jax.random.key(2), 0.5, model=model,
                                      method="magnitude"))
    checkpoint.save_model(tmp_path / "d", model, v, meta={"dataset": "mnist"})
    rc = cli.main(["prune", "--checkpoint", str(tmp_path / "d"), "--ratio", "0.5",
                   "--certificate", "--out", str(tmp_path / "s")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert set(json.loads(out.out)["certificate"]) == set(res.widths)


def test_epsilon_first_ratios_where_mu_is_finite_and_a_clear_error_where_not():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    sym = _mlp_params(np.concatenate([w, -w], 1), np.concatenate([b, -b]))
    loose = bounds.epsilon_ratios(sym, 1e4)
    tight = bounds.epsilon_ratios(sym, 1e2)
    assert set(loose) == {"dense_0"} and 0 < tight["dense_0"] < loose["dense_0"] < 1
    assert bounds.epsilon_ratios(sym, 10.0)["dense_0"] == 0.0   # the bound asks for every neuron
    res = jaxprune.prune(sym, jax.random.key(0), loose, sampling="sparsity_first")
    assert res.widths["dense_0"] == 10 - int(np.floor(loose["dense_0"] * 10 + 1e-9))
    ind = _mlp_params(rng.standard_normal((20, 8)).astype(np.float32),
                      rng.standard_normal(8).astype(np.float32))
    with pytest.raises(ValueError, match="dense_0.*no finite sample size"):
        bounds.epsilon_ratios(ind, 0.5)
    with pytest.raises(ValueError, match="epsilon"):
        bounds.epsilon_ratios(ind, -1.0)


def test_prune_epsilon_first_and_the_certificate_in_the_report():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    sym = _mlp_params(np.concatenate([w, -w], 1), np.concatenate([b, -b]))
    res = jaxprune.prune(sym, jax.random.key(0), None, epsilon=1e2, certificate=True,
                         sampling="sparsity_first")
    ratios = bounds.epsilon_ratios(sym, 1e2)
    assert res.report["target_ratio"] == ratios and res.report["epsilon"] == 1e2
    assert res.widths["dense_0"] == 10 - int(np.floor(ratios["dense_0"] * 10 + 1e-9))
    assert res.report["certificate"]["dense_0"]["epsilon"] > 0
    with pytest.raises(ValueError, match="ratio=None"):
        jaxprune.prune(sym, jax.random.key(0), 0.5, epsilon=1e2)
    ind = _mlp_params(rng.standard_normal((20, 8)).astype(np.float32),
                      rng.standard_normal(8).astype(np.float32))
    with pytest.raises(ValueError, match="dense_0.*no finite sample size"):
        jaxprune.prune(ind, jax.random.key(0), None, epsilon=0.5)
