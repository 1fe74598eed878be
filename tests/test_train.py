"""Tests for jaxprune.train: device-count invariance, masks, KD loss, evaluate, resume."""
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import models, train
from jaxprune.data import ArrayDataset
from jaxprune.train import TrainConfig

REPO = pathlib.Path(__file__).resolve().parents[1]


def TinyDS(images, labels, num_classes=4):
    return ArrayDataset(images, labels, num_classes, "tiny")


def tiny_ds(n=96, shape=(4, 4, 1), seed=0, num_classes=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape).astype(np.float32)
    w = rng.normal(size=(int(np.prod(shape)), num_classes))
    y = np.argmax(x.reshape(n, -1) @ w, axis=1).astype(np.int32)
    return TinyDS(x, y, num_classes)


class BNNet(nn.Module):
    """Tiny dense + BatchNorm + dropout net (exercises batch_stats and the dropout rng)."""
    widths: tuple = (8, 16)
    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(self.widths[0], name="fc")(x.reshape((x.shape[0], -1)))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
        x = nn.relu(x)
        x = nn.relu(nn.Dense(self.widths[1], name="dense")(x))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)


class MLP(nn.Module):
    widths: tuple = (16,)
    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for i, w in enumerate(self.widths):
            x = nn.relu(nn.Dense(w, name=f"dense_{i}")(x))
        return nn.Dense(self.num_classes, name="head")(x)


def _leaves_close(a, b, **kw):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


# ----------------------------------------------------------------------------- invariance

def test_four_devices_available():
    assert jax.local_device_count() >= 4, "conftest should configure 4 CPU devices"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["bn_dropout", "lenet300_dropout"])
def test_device_count_invariance(which):
    if which == "bn_dropout":      # BatchNorm stats must be over the GLOBAL batch
        model, ds = BNNet(), tiny_ds(n=64)
    else:                          # the real LeNet-300-100 (narrow), with dropout
        model = models.get_model("lenet300", widths=(32, 16), dropout_rate=0.3)
        ds = tiny_ds(n=64, shape=(28, 28, 1), num_classes=10)
    cfg = TrainConfig(optimizer="sgd", learning_rate=0.1, momentum=0.9, epochs=2,
                      batch_size=16, seed=3, log_every=0)
    r1 = train.fit(model, ds, cfg, devices=1, progress=False)
    r4 = train.fit(model, ds, cfg, devices=4, progress=False)
    assert int(r1.state["step"]) == int(r4.state["step"]) == 8
    # params actually moved, so the comparison is not vacuous
    init = train.init_variables(model, (1,) + ds.images.shape[1:],
                                 *jax.random.split(jax.random.PRNGKey(3)))
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
                zip(jax.tree.leaves(init["params"]), jax.tree.leaves(r1.variables["params"])))
    assert moved > 1e-3
    _leaves_close(r1.variables, r4.variables, rtol=1e-4, atol=1e-5)
    if which == "bn_dropout":
        assert set(r4.variables) == {"params", "batch_stats"}
    assert len(r4.state["params"]["head"]["kernel"].sharding.device_set) == 4


def test_dropout_rng_matters():
    """Sanity check that the invariance test can fail: a different seed changes params."""
    model = models.get_model("lenet300", widths=(32, 16), dropout_rate=0.3)
    ds = tiny_ds(n=64, shape=(28, 28, 1), num_classes=10)
    cfg = TrainConfig(optimizer="sgd", learning_rate=0.1, epochs=1, batch_size=16, seed=3,
                      log_every=0)
    v = train.init_variables(model, (1, 28, 28, 1), *jax.random.split(jax.random.PRNGKey(0)))
    a = train.fit(model, ds, cfg, variables=v, devices=4, progress=False)
    b = train.fit(model, ds, dataclasses.replace(cfg, seed=4), variables=v, devices=4,
                  progress=False)
    diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables)))
    assert diff > 1e-4


def test_batch_size_must_divide_devices():
    ds = tiny_ds(n=64)
    cfg = TrainConfig(epochs=1, batch_size=10, log_every=0)
    with pytest.raises(ValueError, match="divisible"):
        train.fit(MLP(), ds, cfg, devices=4, progress=False)


# ----------------------------------------------------------------------------- mask / losses

def test_mask_keeps_zeros_and_others_train():
    ds = tiny_ds(n=64)
    model = MLP()
    variables = train.init_variables(model, (1, 4, 4, 1), *jax.random.split(jax.random.PRNGKey(9)))
    rng = np.random.default_rng(0)
    mask = jax.tree.map(lambda p: (rng.random(p.shape) > 0.5).astype(np.float32),
                        variables["params"])
    cfg = TrainConfig(optimizer="adam", learning_rate=1e-2, epochs=2, batch_size=16,
                      weight_decay=1e-2, decoupled_weight_decay=True, l1=1e-3, log_every=0)
    res = train.fit(model, ds, cfg, variables=variables, mask=mask, devices=2, progress=False)
    for p, m, p0 in zip(jax.tree.leaves(res.variables["params"]), jax.tree.leaves(mask),
                        jax.tree.leaves(variables["params"])):
        p = np.asarray(p)
        assert np.all(p[m == 0] == 0.0)
        assert np.any(p[m == 1] != np.asarray(p0)[m == 1])


def test_make_optimizer_mask_zeroes_updates():
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones((2,))}
    mask = {"w": jnp.array([[1, 0], [0, 1], [1, 1]], jnp.float32), "b": jnp.ones((2,))}
    for opt in ("sgd", "adam"):
        tx = train.make_optimizer(TrainConfig(optimizer=opt, weight_decay=0.1), 10, mask=mask)
        st = tx.init(params)
        grads = jax.tree.map(jnp.ones_like, params)
        upd, _ = tx.update(grads, st, params)
        assert np.all(np.asarray(upd["w"])[np.asarray(mask["w"]) == 0] == 0)
        assert np.all(np.asarray(upd["w"])[np.asarray(mask["w"]) == 1] != 0)


def test_schedules():
    cfg = TrainConfig(learning_rate=1.0, schedule="step", step_milestones=(0.5, 0.75),
                      step_decay=0.1, epochs=4, warmup_epochs=1)
    s = train.make_schedule(cfg, 10)   # 40 steps, warmup 10
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(float(s(5)), 0.5)
    np.testing.assert_allclose(float(s(15)), 1.0)
    np.testing.assert_allclose(float(s(25)), 0.1)
    np.testing.assert_allclose(float(s(35)), 0.01, rtol=1e-6)
    c = train.make_schedule(dataclasses.replace(cfg, schedule="cosine", warmup_epochs=0), 10)
    np.testing.assert_allclose(float(c(0)), 1.0)
    np.testing.assert_allclose(float(c(20)), 0.5, atol=1e-6)
    assert float(c(40)) < 1e-6


def test_distillation_loss_hand_computed():
    s = np.array([[1.0, 2.0, 0.5]])
    t = np.array([[0.2, 1.5, 3.0]])
    T = 2.0

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    ps, pt = softmax(s[0] / T), softmax(t[0] / T)
    expected = T * T * np.sum(pt * (np.log(pt) - np.log(ps)))
    got = train.distillation_loss(jnp.asarray(s), jnp.asarray(t), T)
    np.testing.assert_allclose(np.asarray(got)[0], expected, rtol=1e-5)
    # identical logits -> zero
    np.testing.assert_allclose(np.asarray(train.distillation_loss(jnp.asarray(s),
                                                                  jnp.asarray(s), T)), 0,
                               atol=1e-6)
    # the total loss mixes CE and KD with distill_alpha
    cfg = TrainConfig(distill_alpha=0.25, distill_temperature=T)
    labels = jnp.array([1])
    ce = -np.log(softmax(s[0])[1])
    total = train.total_loss(cfg, jnp.asarray(s), labels, {}, jnp.asarray(t))
    np.testing.assert_allclose(float(total), 0.75 * ce + 0.25 * expected, rtol=1e-5)


def test_label_smoothing_cross_entropy():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    p = np.exp(np.array([2.0, 0.0, -1.0]))
    logp = np.log(p / p.sum())
    target = np.array([0.1 / 3, 0.9 + 0.1 / 3, 0.1 / 3])
    got = train.cross_entropy(logits, jnp.array([1]), label_smoothing=0.1)
    np.testing.assert_allclose(float(got[0]), -np.sum(target * logp), rtol=1e-6)


def test_kd_fit_runs_and_moves_towards_teacher():
    ds = tiny_ds(n=64)
    teacher = MLP(widths=(32,))
    tvars = train.init_variables(teacher, (1, 4, 4, 1), *jax.random.split(jax.random.PRNGKey(5)))
    cfg = TrainConfig(learning_rate=1e-2, epochs=3, batch_size=16, distill_alpha=1.0,
                      distill_temperature=1.0, log_every=0)
    student = MLP()
    res = train.fit(student, ds, cfg, teacher=(teacher, tvars), devices=1, progress=False)
    s0 = train.init_variables(student, (1, 4, 4, 1), *jax.random.split(jax.random.PRNGKey(0)))
    t_logits = train.predict_logits(teacher, tvars, ds.images, batch_size=32)

    def kd(v):
        return float(jnp.mean(train.distillation_loss(
            jnp.asarray(train.predict_logits(student, v, ds.images, batch_size=32)),
            jnp.asarray(t_logits), 1.0)))

    assert kd(res.variables) < 0.5 * kd(s0)


# ----------------------------------------------------------------------------- evaluate

def test_evaluate_counts_partial_final_batch():
    ds = tiny_ds(n=37)
    model = MLP()
    v = train.init_variables(model, (1, 4, 4, 1), *jax.random.split(jax.random.PRNGKey(1)))
    logits = np.asarray(model.apply(v, jnp.asarray(ds.images)))
    acc = float(np.mean(logits.argmax(1) == ds.labels))
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    loss = float(np.mean(lse - logits[np.arange(37), ds.labels]))
    out = train.evaluate(model, v, ds, batch_size=16)     # 16 + 16 + 5
    assert out["n"] == 37
    np.testing.assert_allclose(out["accuracy"], acc, rtol=1e-6)
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-5)
    # a sample only in the final partial batch changes the result
    ds2 = TinyDS(ds.images.copy(), ds.labels.copy())
    ds2.labels[-1] = (logits[-1].argmax() + 1) % 4 if ds.labels[-1] == logits[-1].argmax() \
        else logits[-1].argmax()
    out2 = train.evaluate(model, v, ds2, batch_size=16)
    assert abs(out2["accuracy"] - out["accuracy"]) == pytest.approx(1 / 37)
    lg = train.predict_logits(model, v, ds.images, batch_size=16)
    np.testing.assert_allclose(lg, logits, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- checkpoint/resume

def test_metrics_log_and_checkpoints(tmp_path):
    ds, ev = tiny_ds(n=64), tiny_ds(n=20, seed=1)
    cfg = TrainConfig(epochs=2, batch_size=16, log_every=2)
    res = train.fit(MLP(), ds, cfg, out_dir=tmp_path, eval_ds=ev, devices=2, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [x for x in lines if x["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for key in ("step", "loss", "accuracy", "eval_accuracy", "eval_loss", "wall_time",
                "examples_per_sec"):
        assert key in epochs[0]
    assert sum(x["kind"] == "step" for x in lines) == 4
    assert sorted(os.listdir(tmp_path / "checkpoints"))[:2] == ["1", "2"]
    assert res.history == epochs
    # a second fit on a finished out_dir restores instead of training
    res2 = train.fit(MLP(), ds, cfg, out_dir=tmp_path, devices=1, progress=False)
    _leaves_close(res.variables, res2.variables, rtol=0, atol=0)
    # a different config in the same out_dir is refused
    with pytest.raises(ValueError, match="different TrainConfig"):
        train.fit(MLP(), ds, dataclasses.replace(cfg, learning_rate=0.5), out_dir=tmp_path,
                  progress=False)


_RESUME_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from test_train import BNNet, tiny_ds
    import os, signal
    from jaxprune import train
    cfg = train.TrainConfig(optimizer="sgd", learning_rate=0.05, schedule="cosine",
                            epochs=3, batch_size=16, seed=7, log_every=0)

    def kill_after_first_epoch(epoch, result):  # epoch 1's checkpoint is being written
        if epoch == 1:
            import pathlib, time
            done = pathlib.Path(sys.argv[1], "checkpoints", "1")
            deadline = time.time() + 60
            while not done.is_dir() and time.time() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)

    train.fit(BNNet(), tiny_ds(n=64), cfg, out_dir=sys.argv[1], devices=2, progress=False,
              callbacks=[kill_after_first_epoch])
    print("FINISHED")
""")


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(tmp_path):
    cfg = TrainConfig(optimizer="sgd", learning_rate=0.05, schedule="cosine", epochs=3,
                      batch_size=16, seed=7, log_every=0)
    ref = train.fit(BNNet(), tiny_ds(n=64), cfg, devices=2, progress=False)

    out = tmp_path / "run"
    script = _RESUME_SCRIPT.format(tests=str(REPO / "tests"))
    p = subprocess.run([sys.executable, "-c", script, str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]          # SIGKILLed after epoch 1
    assert "FINISHED" not in p.stdout
    assert sorted(os.listdir(out / "checkpoints")) == ["1"]

    res = train.fit(BNNet(), tiny_ds(n=64), cfg, out_dir=out, devices=2, progress=False)
    assert int(res.state["step"]) == 12
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    _leaves_close(ref.variables, res.variables, rtol=1e-6, atol=1e-7)
    _leaves_close(ref.state["opt_state"], res.state["opt_state"], rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- callbacks / optimizer

def test_callbacks_see_every_epoch():
    ds = tiny_ds(n=64)
    cfg = TrainConfig(epochs=3, batch_size=16, log_every=0)
    seen = []

    def record(epoch, result):
        seen.append((epoch, len(result.history), int(result.state["step"]),
                     jax.device_get(result.variables["params"]["head"]["bias"])))

    res = train.fit(MLP(), ds, cfg, devices=1, progress=False, callbacks=[record])
    assert [s[:3] for s in seen] == [(1, 1, 4), (2, 2, 8), (3, 3, 12)]
    np.testing.assert_array_equal(seen[-1][3], np.asarray(res.variables["params"]["head"]["bias"]))
    assert not np.array_equal(seen[0][3], seen[-1][3])


def test_optimizer_override_equals_the_config_optimizer():
    """``fit(optimizer=tx)`` trains with ``tx``: plain SGD given as an optax transformation
    reproduces the config's SGD (momentum 0, constant rate); masks wrap it too."""
    import optax
    from jaxprune import optim

    ds = tiny_ds(n=64)
    model = MLP()
    cfg = TrainConfig(optimizer="sgd", learning_rate=0.1, momentum=0.0, epochs=2, batch_size=16,
                      log_every=0)
    v = train.init_variables(model, (1, 4, 4, 1), *jax.random.split(jax.random.PRNGKey(2)))
    a = train.fit(model, ds, cfg, variables=v, devices=1, progress=False)
    b = train.fit(model, ds, cfg, variables=v, devices=1, progress=False,
                  optimizer=optax.sgd(0.1))
    _leaves_close(a.variables, b.variables, rtol=1e-6, atol=1e-7)
    mask = optim.magnitude_mask(v["params"], 0.5)
    c = train.fit(model, ds, cfg, variables=v, devices=1, progress=False, mask=mask,
                  optimizer=optax.sgd(0.1))
    assert isinstance(c.state["opt_state"], optim.MaskedState)
    assert optim.kernel_sparsity(c.variables["params"]) == pytest.approx(0.5, abs=0.02)


def test_logit_matching_distillation():
    """``distill_loss="logit_mse"``: the KD term is ``mean (s − t)²``; with ``distill_alpha=1``
    fit regresses the student's logits on the teacher's (under a mask too)."""
    s, t = jnp.array([[1.0, 2.0, 0.5]]), jnp.array([[0.2, 1.5, 3.0]])
    cfg = TrainConfig(distill_alpha=1.0, distill_loss="logit_mse")
    total = train.total_loss(cfg, s, jnp.array([1]), {}, t)
    np.testing.assert_allclose(float(total), np.mean((np.asarray(s) - np.asarray(t)) ** 2),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="distill_loss"):
        TrainConfig(distill_loss="l2")
    ds = tiny_ds(n=64)
    teacher = MLP(widths=(32,))
    tvars = train.init_variables(teacher, (1, 4, 4, 1), *jax.random.split(jax.random.PRNGKey(5)))
    student = MLP()
    s0 = train.init_variables(student, (1, 4, 4, 1), *jax.random.split(jax.random.PRNGKey(0)))
    mask = jax.tree.map(lambda p: (np.arange(p.size).reshape(p.shape) % 4 != 0)
                        .astype(np.float32), s0["params"])
    cfg = TrainConfig(learning_rate=1e-2, epochs=3, batch_size=16, distill_alpha=1.0,
                      distill_loss="logit_mse", log_every=0)
    res = train.fit(student, ds, cfg, variables=s0, mask=mask, teacher=(teacher, tvars),
                    devices=1, progress=False)
    t_logits = train.predict_logits(teacher, tvars, ds.images)

    def mse(v):
        return float(np.mean((train.predict_logits(student, v, ds.images) - t_logits) ** 2))

    assert mse(res.variables) < 0.5 * mse(s0)
    for p, m in zip(jax.tree.leaves(res.variables["params"]), jax.tree.leaves(mask)):
        assert np.all(np.asarray(p)[m == 0] == 0.0)
