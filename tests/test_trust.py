"""A checkpoint's ``model.json`` is data: loading it imports and calls only what is trusted.

Crafted files (a non-module class with side effects, a reference to a shell-running
function, a package with import-time side effects, a ``"ref"`` nested in a list or dict, a
nested module, a path that walks out of a trusted module) are refused with nothing run, through
the API and the CLI; a user's own module loads with ``trust=``; a module whose fields cannot be
named saves and loads with ``like=``.
"""
import json
import pathlib
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import _spec, checkpoint, cli, rebuild

REPO = pathlib.Path(__file__).resolve().parents[1]


def _dense_dir(path: pathlib.Path) -> pathlib.Path:
    """A saved ``nn.Dense(3)`` whose model record the tests then replace."""
    model = nn.Dense(3)
    checkpoint.save_model(path, model, model.init(jax.random.key(0), jnp.ones((1, 4))))
    return path


def _with_record(path: pathlib.Path, spec: dict) -> pathlib.Path:
    doc = json.loads((path / "model.json").read_text())
    doc["model"] = {"spec": spec}
    (path / "model.json").write_text(json.dumps(doc))
    return path


def _crafted(sentinel: pathlib.Path) -> dict[str, dict]:
    """Records that would create ``sentinel`` if anything they name were run."""
    touch = {"tuple": ["touch", str(sentinel)]}
    dense = "flax.linen:Dense"
    return {
        "popen": {"class": "subprocess:Popen", "fields": {"args": touch}},
        "os_system_init": {"class": dense, "fields": {"features": 3,
                                                      "kernel_init": {"ref": "os:system"}}},
        "evil_package": {"class": "evilpkg:Net", "fields": {}},
        "ref_in_list": {"class": "flax.linen:Sequential",
                        "fields": {"layers": {"list": [{"ref": "os:system"}]}}},
        "ref_in_dict": {"class": dense, "fields": {"features": 3, "dot_general_cls": {
            "dict": {"a": {"ref": "subprocess:getoutput"}}}}},
        "nested_module": {"class": "flax.linen:Sequential", "fields": {"layers": {"list": [
            {"module": {"class": "subprocess:Popen", "fields": {"args": touch}}}]}}},
        "walks_out": {"class": dense, "fields": {
            "features": 3, "kernel_init": {"ref": "jaxprune.checkpoint:os.system"}}},
        "dunder": {"class": dense, "fields": {
            "features": 3, "kernel_init": {"ref": "flax.linen:Dense.__init__.__globals__"}}},
        "unknown_kind": {"class": dense, "fields": {"features": 3,
                                                    "kernel_init": {"call": "os:system"}}},
    }


@pytest.fixture()
def evil(tmp_path, monkeypatch):
    """``(sentinel, records)``: an importable package ``evilpkg`` whose import creates the
    sentinel, and the crafted records."""
    sentinel = tmp_path / "pwned"
    pkg = tmp_path / "site" / "evilpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(sentinel)!r}).touch()\n"
        "import flax.linen as nn\nclass Net(nn.Module):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return sentinel, _crafted(sentinel)


def test_crafted_records_are_refused_before_anything_runs(evil, tmp_path):
    sentinel, records = evil
    for name, spec in records.items():
        with pytest.raises(ValueError) as err:
            _spec.module_from_spec(spec)
        message = str(err.value)
        assert "\n" not in message, name
        if name in ("popen", "os_system_init", "evil_package", "ref_in_list", "ref_in_dict",
                    "nested_module"):
            assert "not trusted" in message and "--trust" in message, (name, message)
    # consent to a package does not make a non-module class or a non-function loadable
    with pytest.raises(ValueError, match="not a Linen or NNX module"):
        _spec.module_from_spec(records["popen"], trust=("subprocess",))
    with pytest.raises(ValueError, match="not a function, class or dtype"):
        _spec.module_from_spec({"class": "flax.linen:Dense", "fields": {
            "features": 3, "kernel_init": {"ref": "jax:config"}}})
    assert not sentinel.exists() and "evilpkg" not in sys.modules


def test_load_model_refuses_crafted_files_and_names_the_argument(evil, tmp_path):
    sentinel, records = evil
    d = _with_record(_dense_dir(tmp_path / "ckpt"), records["popen"])
    with pytest.raises(ValueError, match=r"'subprocess:Popen'.*trust=\('subprocess',\)"):
        checkpoint.load_model(d)
    _with_record(d, records["evil_package"])
    with pytest.raises(ValueError, match="evilpkg"):
        checkpoint.load_model(d)
    assert not sentinel.exists() and "evilpkg" not in sys.modules


def test_cli_refuses_crafted_files_with_one_line_exit_2(evil, tmp_path, capsys):
    sentinel, records = evil
    d = str(_with_record(_dense_dir(tmp_path / "ckpt"), records["os_system_init"]))
    out = str(tmp_path / "out")
    for argv in (["evaluate", "--checkpoint", d],
                 ["prune", "--checkpoint", d, "--ratio", "0.5", "--out", out],
                 ["finetune", "--checkpoint", d, "--out", out],
                 ["finetune", "--checkpoint", d, "--out", out, "--trust", "subprocess"]):
        assert cli.main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and "'os:system'" in lines[0] and "--trust os" in lines[0]
        assert lines[0].startswith(f"jaxprune {argv[0]}: error:")
    assert not sentinel.exists() and not pathlib.Path(out).exists()


def test_a_users_own_module_loads_with_trust(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "mymodels.py").write_text(textwrap.dedent("""
        import flax.linen as nn

        class Net(nn.Module):
            width: int = 8
            act: object = nn.relu

            @nn.compact
            def __call__(self, x):
                return nn.Dense(2)(self.act(nn.Dense(self.width)(x)))
    """))
    monkeypatch.syspath_prepend(str(site))
    import mymodels

    model = mymodels.Net(width=5, act=nn.gelu)
    variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
    checkpoint.save_model(tmp_path / "ckpt", model, variables)
    with pytest.raises(ValueError, match=r"trust=\('mymodels',\)"):
        checkpoint.load_model(tmp_path / "ckpt")
    loaded, loaded_vars, _ = checkpoint.load_model(tmp_path / "ckpt", trust=("mymodels",))
    assert loaded == model
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(loaded.apply(loaded_vars, x), model.apply(variables, x))


def _scaled_init(scale):
    def init(key, shape, dtype=jnp.float32):
        return scale * jax.random.normal(key, shape, dtype)
    return init


class _Config:
    """A plain (unhashable, unnameable as a value) config object."""
    __hash__ = None

    def __init__(self, width):
        self.width = width


class ClosureNet(nn.Module):
    config: object = None
    kernel_init: object = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.config.width, kernel_init=self.kernel_init)(x))
        return nn.Dense(2)(h)


def test_fields_that_cannot_be_named_save_and_load_with_like(tmp_path):
    dense = ClosureNet(config=_Config(8), kernel_init=_scaled_init(0.5))
    small = rebuild.Resized(dense, ((("Dense_0",), (("features", 3),)),))
    x = jnp.ones((2, 4))
    variables = small.init(jax.random.key(0), x)
    checkpoint.save_model(tmp_path / "ckpt", small, variables)       # never fails
    record = json.loads((tmp_path / "ckpt" / "model.json").read_text())["model"]
    assert record["sizes"] == [[["Dense_0"], [["features", 3]]]]
    assert record["unrecorded"]["class"].endswith(":ClosureNet")
    with pytest.raises(ValueError, match="like="):
        checkpoint.load_model(tmp_path / "ckpt")
    loaded, loaded_vars, _ = checkpoint.load_model(tmp_path / "ckpt", like=dense)
    assert isinstance(loaded, rebuild.Resized) and loaded.sizes == small.sizes
    np.testing.assert_allclose(loaded.apply(loaded_vars, x), small.apply(variables, x))


@pytest.mark.slow
def test_cli_subprocess_refuses_a_crafted_checkpoint(evil, tmp_path):
    sentinel, records = evil
    d = _with_record(_dense_dir(tmp_path / "ckpt"), records["popen"])
    p = subprocess.run([sys.executable, "-m", "jaxprune", "evaluate", "--checkpoint", str(d)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().count("\n") == 0 and "--trust subprocess" in p.stderr
    assert not sentinel.exists()
