"""Tests for jaxprune.export: pruned models exported (StableHLO, safetensors, ONNX) give the
outputs of the saved model, and the StableHLO artefacts run in a process without jaxprune."""
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import checkpoint, cli, export, models
from jaxprune._flax import apply_inference


def _random_variables(model, shape, seed):
    """Random variables of ``model``'s shapes without compiling its ``init``."""
    return _random_like(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + shape)),
                        seed)


def _random_nnx(build, seed):
    """``build()``'s NNX module holding random arrays (nothing initialised eagerly)."""
    from jaxprune._nnx import variables_of, with_variables

    abstract = nnx.eval_shape(build)
    return with_variables(abstract, _random_like(variables_of(abstract), seed))


def _random_like(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), tree)


def _noisy_batch_stats(variables, seed):
    """Running statistics away from init (mean 0, var 1) so that BatchNorm's inference
    mode shows in the outputs."""
    rng = np.random.default_rng(seed)
    stats = jax.tree.map(lambda a: np.abs(np.asarray(a)) + rng.uniform(0.2, 0.8, a.shape)
                         .astype(a.dtype), variables["batch_stats"])
    return {**variables, "batch_stats": stats}


def _save_pruned(root, name, model, variables, input_shape, meta=None):
    """Prune ``model`` (Linen: with ``variables``; NNX: the module) to half its parameters,
    save it under ``root/name`` and return ``(dir, reference outputs fn)``."""
    source, linen = (model, None) if variables is None else (variables, model)
    res = jaxprune.prune(source, jax.random.key(0), 0.5, method="l1_norm", model=linen,
                         input_shape=input_shape)
    small = res.model(model)
    d = root / name
    if variables is None:
        checkpoint.save_model(d, small, meta=meta)
        small.eval()
        return d, lambda x: np.asarray(small(x))
    checkpoint.save_model(d, small, res.params, meta=meta)
    return d, lambda x: np.asarray(apply_inference(small, res.params, x))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Three pruned checkpoints (LeNet-300-100, a conv net with BatchNorm, an NNX LeNet),
    each with a test input ``x.npy``, its outputs ``y.npy`` and exported artefacts."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    cases = {}
    lenet = models.get_model("lenet300", widths=(40, 20))
    v = _random_variables(lenet, (28, 28, 1), 1)
    cases["lenet300"] = _save_pruned(root, "lenet300", lenet, v, (28, 28, 1))
    resnet = models.get_model("resnet20", num_blocks=(1, 1, 1), stage_widths=(4, 8, 8),
                              widths=(4, 8, 8))
    v = _noisy_batch_stats(_random_variables(resnet, (8, 8, 3), 2), 3)
    cases["resnet_bn"] = _save_pruned(root, "resnet_bn", resnet, v, (8, 8, 3),
                                      meta={"input_shape": [8, 8, 3]})
    module = _random_nnx(lambda: models.get_model("lenet300_nnx", widths=(24, 12),
                                                  image=(8, 8, 1), rngs=nnx.Rngs(4)), 4)
    cases["lenet300_nnx"] = _save_pruned(root, "lenet300_nnx", module, None, (8, 8, 1))
    shapes = {"lenet300": (28, 28, 1), "resnet_bn": (8, 8, 3), "lenet300_nnx": (8, 8, 1)}
    out = {}
    for name, (d, reference) in cases.items():
        x = rng.normal(size=(5,) + shapes[name]).astype(np.float32)
        np.save(d / "x.npy", x)
        np.save(d / "y.npy", reference(x))
        out[name] = d
    return out


def _stablehlo(d, **kwargs):
    """``d/model[<batch>].stablehlo``, exported once per module."""
    path = d / f"model{kwargs.get('batch', '')}.stablehlo"
    if not path.exists():
        export.export(d, path, **kwargs)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet300", "resnet_bn", "lenet300_nnx"])
def test_stablehlo_export_gives_the_saved_models_outputs(saved, name):
    d = saved[name]
    x, y = np.load(d / "x.npy"), np.load(d / "y.npy")
    path = _stablehlo(d)
    record = json.loads((d / "model.stablehlo.json").read_text())
    f = export.load_stablehlo(path)
    for n in (1, 5):  # symbolic batch: any size runs
        np.testing.assert_allclose(np.asarray(f.call(x[:n])), y[:n], rtol=1e-5, atol=1e-5)
    assert record["batch"] == "b" and record["symbolic_batch"] is True
    assert record["inputs"] == [{"shape": ["b", *x.shape[1:]], "dtype": "float32"}]
    assert record["outputs"] == [{"shape": ["b", y.shape[1]], "dtype": "float32"}]
    _, variables, _ = checkpoint.load_model(d)
    assert record["params"] == jaxprune.metrics.param_count(variables)
    assert record["flops_per_example"] > 0
    assert record["versions"] == {"jaxprune": jaxprune.__version__, "jax": jax.__version__}
    assert record["layer_widths"]["head"] == 10
    assert record["checkpoint"] == str(d)


def test_fixed_batch_export_takes_only_that_batch(saved):
    d = saved["resnet_bn"]
    x, y = np.load(d / "x.npy"), np.load(d / "y.npy")
    path = _stablehlo(d, batch=2)
    f = export.load_stablehlo(path)
    np.testing.assert_allclose(np.asarray(f.call(x[:2])), y[:2], rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception):
        f.call(x[:3])
    assert json.loads((d / "model2.stablehlo.json").read_text())["inputs"][0]["shape"] == \
        [2, 8, 8, 3]


@pytest.mark.parametrize("name", ["lenet300", "resnet_bn", "lenet300_nnx"])
def test_safetensors_hold_the_pruned_weights(saved, name, tmp_path):
    d = saved[name]
    _, variables, _ = checkpoint.load_model(d)
    record = export.export(d, tmp_path / "w.safetensors", format="safetensors")
    tensors, metadata = export.read_safetensors(tmp_path / "w.safetensors")
    flat = {".".join(p): np.asarray(a) for p, a in jaxprune._tree.leaves_with_paths(variables)}
    assert sorted(tensors) == sorted(flat)
    for k, a in flat.items():
        np.testing.assert_array_equal(tensors[k], a)
    assert metadata["format"] == "jaxprune"
    sidecar = json.loads((tmp_path / "w.safetensors.json").read_text())
    assert sidecar == json.loads(json.dumps(checkpoint.to_jsonable(record)))
    assert sidecar["model"] == checkpoint.read_model_json(d)["model"]
    assert sidecar["tensors"]["params.head.kernel"]["shape"] == list(flat["params.head.kernel"]
                                                                      .shape)
    if name == "lenet300":
        assert sidecar["widths"] == list(checkpoint.load_model(d)[0].widths)
        assert sidecar["widths"][0] < 40
    try:
        from safetensors.numpy import load_file
    except ImportError:
        return
    for k, a in load_file(str(tmp_path / "w.safetensors")).items():
        np.testing.assert_array_equal(a, flat[k])


def test_safetensors_writer_layout(tmp_path):
    arrays = {"b": np.arange(3, dtype=np.int32), "a": np.ones((2, 2), np.float16),
              "c": np.array([True, False]), "d": np.ones(4, jnp.bfloat16)}
    export.write_safetensors(tmp_path / "t.safetensors", arrays, {"k": 1})
    raw = (tmp_path / "t.safetensors").read_bytes()
    size = int.from_bytes(raw[:8], "little")
    assert size % 8 == 0
    header = json.loads(raw[8:8 + size])
    assert header["__metadata__"] == {"k": "1"}
    assert header["a"] == {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}
    assert header["b"]["data_offsets"] == [8, 20] and header["c"]["dtype"] == "BOOL"
    assert header["d"] == {"dtype": "BF16", "shape": [4], "data_offsets": [22, 30]}
    assert len(raw) == 8 + size + 30
    back, _ = export.read_safetensors(tmp_path / "t.safetensors")
    for k, a in arrays.items():
        np.testing.assert_array_equal(back[k], a)
        assert back[k].dtype == a.dtype
    with pytest.raises(export.ExportError, match="complex64"):
        export.write_safetensors(tmp_path / "u.safetensors", {"z": np.zeros(2, np.complex64)})


class _FixedBatch(nn.Module):
    """Branches on the batch size, which a symbolic batch cannot answer."""

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(3)(x.reshape((x.shape[0], -1)))
        return y * 2 if x.shape[0] > 1 else y


def test_a_model_without_symbolic_batch_falls_back_to_batch_1(tmp_path):
    model = _FixedBatch()
    v = model.init(jax.random.key(0), np.zeros((1, 4), np.float32))
    with pytest.warns(export.ExportWarning, match="symbolic batch"):
        record = export.export_model(model, v, tmp_path / "m.stablehlo", input_shape=(4,))
    assert record["batch"] == 1 and "symbolic_batch_error" in record
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(export.load_stablehlo(tmp_path / "m.stablehlo").call(x),
                               model.apply(v, x), rtol=1e-6)


class _EvenBatch(nn.Module):
    @nn.compact
    def __call__(self, x):
        if x.shape[0] % 2:
            raise ValueError("this model takes even batches")
        return nn.Dense(3)(x)


def test_a_batch_the_model_cannot_take_is_a_one_line_error(tmp_path):
    model = _EvenBatch()
    v = model.init(jax.random.key(0), np.zeros((2, 4), np.float32))
    with pytest.raises(export.ExportError) as err:
        export.export_model(model, v, tmp_path / "m.stablehlo", input_shape=(4,), batch=3)
    assert "\n" not in str(err.value) and "even batches" in str(err.value)
    assert "(3, 4)" in str(err.value)
    assert export.export_model(model, v, tmp_path / "m.stablehlo", input_shape=(4,),
                               batch=2)["batch"] == 2


def test_token_input_model(tmp_path):
    """A model on int32 token ids: the dtype comes from ``dtype=`` (or the checkpoint's
    ``meta["input_dtype"]``)."""

    class Tokens(nn.Module):
        @nn.compact
        def __call__(self, ids):
            return nn.Dense(5)(nn.Embed(50, 8)(ids).mean(axis=1))

    model = Tokens()
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 49]], np.int32)
    v = model.init(jax.random.key(0), ids)
    record = export.export_model(model, v, tmp_path / "tok.stablehlo", input_shape=(4,),
                                 dtype="int32")
    assert record["inputs"] == [{"shape": ["b", 4], "dtype": "int32"}]
    f = export.load_stablehlo(tmp_path / "tok.stablehlo")
    np.testing.assert_allclose(f.call(ids), model.apply(v, ids), rtol=1e-6)


def test_onnx(saved, tmp_path, monkeypatch):
    """ONNX Runtime runs the converted graph to 1e-4 of JAX's outputs (with jax2onnx
    installed); without it the error names the extra."""
    d = saved["lenet300"]
    try:
        import jax2onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError:
        with pytest.raises(export.ExportError, match=r"jaxprune\[onnx\]"):
            export.export(d, tmp_path / "m.onnx", format="onnx")
        return
    x, y = np.load(d / "x.npy"), np.load(d / "y.npy")
    record = export.export(d, tmp_path / "m.onnx", format="onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4)
    assert record["format"] == "onnx" and record["outputs"][0]["shape"][1] == 10
    monkeypatch.setitem(sys.modules, "jax2onnx", None)
    with pytest.raises(export.ExportError, match=r"jaxprune\[onnx\]"):
        export.export(d, tmp_path / "n.onnx", format="onnx")


def test_cli_export_and_one_line_errors(saved, tmp_path, capsys):
    d = saved["lenet300"]
    assert cli.main(["export", "--checkpoint", str(d), "--out", str(tmp_path / "m.hlo"),
                     "--batch", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["batch"] == 3 and printed["inputs"][0]["shape"] == [3, 28, 28, 1]
    x, y = np.load(d / "x.npy"), np.load(d / "y.npy")
    np.testing.assert_allclose(export.load_stablehlo(tmp_path / "m.hlo").call(x[:3]), y[:3],
                               rtol=1e-5, atol=1e-5)
    for argv, needle in [
            (["--checkpoint", str(tmp_path / "nope"), "--out", "o"], "does not exist"),
            (["--checkpoint", str(d), "--out", "o", "--format", "tflite"], "invalid choice"),
            (["--checkpoint", str(d), "--out", "o", "--batch", "0"], "positive integer"),
            (["--checkpoint", str(d), "--out", "o", "--format", "safetensors", "--platform",
              "cuda"], "only applies"),
            (["--checkpoint", str(d), "--out", str(tmp_path)], "is a directory")]:
        assert cli.main(["export", *argv]) == 2
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith("jaxprune export: error: ") and needle in last, err
        assert "Traceback" not in err
    assert cli.main(["export", "--checkpoint", str(d), "--out", str(tmp_path / "g.hlo"),
                     "--platform", "cpu", "cuda"]) == 0
    assert json.loads(capsys.readouterr().out)["platforms"] == ["cpu", "cuda"]
    np.testing.assert_allclose(export.load_stablehlo(tmp_path / "g.hlo").call(x), y,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(export.ExportError, match="positive integer"):
        export.export(d, tmp_path / "z.hlo", batch=0)
    with pytest.raises(export.ExportError, match=r"jaxprune\[export\]"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(sys.modules, "flatbuffers", None)
            export.export(d, tmp_path / "z.hlo")
    with pytest.raises(export.ExportError, match="unknown export format"):
        export.export(d, tmp_path / "z.hlo", format="tflite")


_LOAD_WITHOUT_JAXPRUNE = textwrap.dedent("""
    import sys
    import jax, numpy as np
    for d in sys.argv[1:]:
        f = jax.export.deserialize(bytearray(open(d + "/model.stablehlo", "rb").read()))
        x, y = np.load(d + "/x.npy"), np.load(d + "/y.npy")
        for n in (1, 5):
            np.testing.assert_allclose(np.asarray(f.call(x[:n])), y[:n], rtol=1e-5, atol=1e-5)
    assert "jaxprune" not in sys.modules and "flax" not in sys.modules, sorted(sys.modules)
    print("ok", len(sys.argv) - 1)
""")


@pytest.mark.slow
def test_stablehlo_runs_in_a_process_without_jaxprune(saved, tmp_path):
    dirs = [str(_stablehlo(d).parent) for d in saved.values()]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_JAXPRUNE, *dirs], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == ["ok", str(len(dirs))]
