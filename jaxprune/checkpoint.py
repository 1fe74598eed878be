"""Orbax checkpoints for models (``save_model``/``load_model``) and for training state.

Model directory layout (written by :func:`save_model`, read by :func:`load_model`)::

    <directory>/model.json     {"format": "jaxprune-model/1",
                                "model": model_record(model),   # incl. widths
                                "collections": ["params", "batch_stats"],
                                "meta": {...user metadata, e.g. dataset, accuracy...}}
    <directory>/variables/     orbax StandardCheckpointer tree {'params': ..., 'batch_stats': ...}

The layer widths travel inside ``model.json`` so a pruned model round-trips (a jaxprune model
by its registry config and smaller ``widths``, any other Linen module by its importable class,
its fields and the pruned layer sizes; a registered NNX model by its dense constructor
arguments, shrunk on load to the saved arrays' shapes); restoring reads array shapes/dtypes
from the orbax metadata, so no template of the right shape is needed. Arrays are restored onto
one device (the first local device, or ``device=``), independent of the device count that
saved them.

Training checkpoints (used by :func:`jaxprune.train.fit`) live in ``<out_dir>/checkpoints/``
as an orbax ``CheckpointManager`` whose step number is the number of COMPLETED epochs; each
step holds two items: ``state`` (params, batch_stats, opt_state, step, rng; StandardSave) and
``meta`` (JSON: model config, TrainConfig, epoch, step, history).
"""

from __future__ import annotations

import copy as copy_module
import dataclasses
import hashlib
import json
import math
import os
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import linen as nn
from flax import nnx

from jaxprune import distributed, models, rebuild
from jaxprune._flax import Example, Held, abstract_init, first_line, hashable, mode_kwargs
from jaxprune._nnx import submodules, variables_of, with_variables
from jaxprune._spec import module_from_spec, module_spec
from jaxprune._tree import as_variables, leaves_with_paths, shape_mismatches, to_host

MODEL_JSON = "model.json"
VARIABLES_DIR = "variables"
#: Written by the CLI's commands into their output directory (:mod:`jaxprune.runs`).
RUN_JSON = "run.json"
FORMAT = "jaxprune-model/1"

__all__ = [
    "save_model",
    "load_model",
    "is_model_dir",
    "read_model_json",
    "read_run_json",
    "model_record",
    "model_from_record",
    "array_checksums",
    "save_nnx",
    "load_nnx",
    "training_manager",
    "save_training_state",
    "restore_training_state",
    "latest_training_step",
    "read_training_meta",
    "to_jsonable",
]


def _abs(directory) -> pathlib.Path:
    return pathlib.Path(os.path.abspath(os.fspath(directory)))


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, pathlib.Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj, path: str, bad: list) -> Any:
    """``obj`` with every NaN/inf float replaced by ``None`` (their paths appended to ``bad``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        bad.append(path or "<value>")
        return None
    if isinstance(obj, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), bad) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v, f"{path}[{i}]", bad) for i, v in enumerate(obj)]
    return obj


def to_jsonable(obj):
    """Round-trip through json so metadata is plain dict/list/str/float/int/bool/None.

    Strict JSON: NaN and inf become ``null``; a dict gets a ``"non_finite"`` entry naming
    where they were (strict parsers reject the bare ``NaN`` Python's json writes)."""
    plain = json.loads(json.dumps(obj, default=_json_default))
    bad: list = []
    clean = _finite(plain, "", bad)
    if bad and isinstance(clean, dict):
        clean["non_finite"] = sorted(set(clean.get("non_finite") or []) | set(bad))
    json.dumps(clean, allow_nan=False)
    return clean


def save_model(directory, model, variables=None, meta: dict | None = None) -> pathlib.Path:
    """Save ``model`` (its config, incl. widths) and ``variables`` under ``directory``.

    ``variables`` is a Flax variable dict (``{'params': ..., 'batch_stats': ...}``); a bare
    params tree (no 'params' key) is accepted and stored as ``{'params': tree}``. A
    registered NNX model (:data:`jaxprune.models.NNX_MODELS`) is saved with its own arrays
    when ``variables`` is ``None``. Existing
    ``model.json``/``variables/`` in ``directory`` are overwritten; other files are kept.
    Returns the directory path.

    >>> import tempfile, jax, jax.numpy as jnp
    >>> from jaxprune.models import LeNet300100
    >>> model = LeNet300100(widths=(8, 4))
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> folder = save_model(tempfile.mkdtemp(), model, variables)
    >>> loaded, restored, meta = load_model(folder)
    >>> loaded.widths, restored["params"]["dense_0"]["kernel"].shape
    ((8, 4), (784, 8))
    """
    directory = _abs(directory)
    cfg = model_record(model)
    if variables is None:
        if not isinstance(model, nnx.Module):
            raise ValueError("save_model needs the variables of a Linen model")
        variables = variables_of(model)
    directory.mkdir(parents=True, exist_ok=True)
    variables, _ = as_variables(variables)
    host_vars = to_host(variables)
    # model.json goes last (atomically): until it is there the directory holds no model, so an
    # interrupted save never leaves arrays that load_model/evaluate would accept. Every
    # process of a multi-process run calls this; orbax and the main process write.
    main = distributed.is_main()
    if main:
        (directory / MODEL_JSON).unlink(missing_ok=True)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(directory / VARIABLES_DIR, host_vars, force=True)
    ckpt.wait_until_finished()
    ckpt.close()
    if main:
        doc = {
            "format": FORMAT,
            "model": to_jsonable(cfg),
            "collections": sorted(host_vars.keys()),
            "meta": to_jsonable(meta or {}),
            "checksums": array_checksums(host_vars),
        }
        tmp = directory / (MODEL_JSON + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
        os.replace(tmp, directory / MODEL_JSON)
    distributed.barrier("jaxprune.save_model")
    return directory


def array_checksums(variables) -> dict[str, str]:
    """``{"collection/a/b/kernel": sha256 of the array's bytes}`` of a variables tree."""
    out = {}
    for path, leaf in leaves_with_paths(to_host(variables)):
        data = np.ascontiguousarray(leaf)
        digest = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
        digest.update(data.tobytes())
        out["/".join(map(str, path))] = digest.hexdigest()
    return out


def _verify_checksums(directory, doc: dict, variables) -> None:
    """``ValueError`` naming the arrays whose bytes differ from the checksums ``model.json``
    records (models saved before checksums were recorded are not checked)."""
    saved = doc.get("checksums")
    if not isinstance(saved, dict):
        return
    now = array_checksums(variables)
    bad = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if bad:
        raise ValueError(
            f"{directory}: the saved arrays do not match the checksums in "
            f"{MODEL_JSON} ({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''})"
            "; the files were changed or corrupted"
        )


def model_record(model) -> dict:
    """How ``model.json`` records a module: a jaxprune model by its registry config
    (``{"name": ..., widths...}``); a registered NNX model by its registry config; any other
    Linen module by its class and fields (``{"spec": ...}``,
    :func:`jaxprune._spec.module_spec`) where they can be named, else by its class name only
    (``{"unrecorded": {"class": ..., "reason": ...}}``: it then loads with ``like=``). A
    pruned :class:`jaxprune.rebuild.Resized` module also records its layer ``sizes``, so that
    ``load_model(dir, like=dense_module)`` can rebuild it from the dense module alone."""
    try:
        return models.model_config(model)
    except TypeError as err:
        if isinstance(model, nnx.Module):
            raise ValueError(str(err)) from None
    record: dict = {}
    base = model
    if isinstance(model, rebuild.Resized):
        base = model.module
        record["sizes"] = [
            [list(path), [[k, _plain(v)] for k, v in fields]] for path, fields in model.sizes
        ]
    try:
        record["spec"] = module_spec(model)
    except Exception as err:  # noqa: BLE001 - whatever the fields hold, the save goes on
        cls = type(base)
        record["unrecorded"] = {
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "reason": first_line(err),
        }
    return record


#: How a ``Resized.sizes`` value that is an object (a copied config object) is written: its
#: class name and its JSON attributes; loading copies the like-typed object of ``like=``.
OBJECT = "jaxprune-object"
_SCALARS = (type(None), bool, int, float, str)


def _plain(value):
    """A ``Resized.sizes`` value as JSON: tuples as lists, a config object as
    ``{OBJECT: {"class": ..., "attrs": {...}}}`` (its JSON-able attributes only)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, _SCALARS):
        return value
    cls = type(value)
    attrs = {
        k: _plain(v)
        for k, v in getattr(value, "__dict__", {}).items()
        if isinstance(k, str) and _is_json(v)
    }
    return {OBJECT: {"class": f"{cls.__module__}:{cls.__qualname__}", "attrs": attrs}}


def _is_json(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return isinstance(value, _SCALARS + (np.integer, np.floating, np.bool_))


def _decoded(value, like):
    """Inverse of :func:`_plain`: lists as tuples; an object from the same-class object
    that ``like`` holds, copied with the recorded attributes (nothing is imported)."""
    if isinstance(value, list):
        return tuple(_decoded(v, like) for v in value)
    if isinstance(value, dict) and set(value) == {OBJECT}:
        body = value[OBJECT]
        if not (
            isinstance(body, dict)
            and isinstance(body.get("class"), str)
            and isinstance(body.get("attrs", {}), dict)
        ):
            raise ValueError("malformed object in the saved model's sizes")
        found = _held_object(like, body["class"])
        if found is None:
            raise ValueError(
                f"the saved model holds a {body['class']!r} object in a field, "
                "and the module passed as like= holds none"
            )
        copy = copy_module.copy(found)
        for key, item in body.get("attrs", {}).items():
            if str(key).isidentifier():
                setattr(copy, key, _decoded(item, like) if isinstance(item, dict) else item)
        return copy
    if isinstance(value, dict):
        return {k: _decoded(v, like) for k, v in value.items()}
    return value


def _held_object(root, name: str):
    """The first object of class ``name`` (``module:qualname``) among the fields of the module
    ``root`` (nested modules, lists, tuples and dicts included), or ``None``."""
    stack, seen = [root], set()
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        cls = type(value)
        if f"{cls.__module__}:{cls.__qualname__}" == name:
            return value
        if isinstance(value, nn.Module):
            stack += [
                getattr(value, f.name)
                for f in dataclasses.fields(value)
                if f.init and f.name not in ("parent", "name")
            ][::-1]
            if isinstance(value, Held):
                stack.append(value.wrapped_module)
        elif isinstance(value, (tuple, list)):
            stack += list(value)[::-1]
        elif isinstance(value, dict):
            stack += list(value.values())[::-1]
    return None


def _sizes_from_record(sizes, like=None) -> tuple:
    """The ``Resized.sizes`` table :func:`model_record` wrote as JSON lists."""
    try:
        return tuple(
            (tuple(str(p) for p in path), tuple((str(k), _decoded(v, like)) for k, v in fields))
            for path, fields in sizes
        )
    except (TypeError, AttributeError):
        raise ValueError("malformed 'sizes' in the saved model record") from None


def _from_like(record: dict, like):
    """The saved module rebuilt from the dense module ``like`` and the recorded sizes."""
    if isinstance(like, nnx.Module):
        raise ValueError("like= takes a Linen module (NNX modules load with load_nnx)")
    if not isinstance(like, nn.Module):
        raise ValueError(f"like= must be a Linen module, got {type(like).__name__}")
    if "sizes" not in record:
        return like
    base = like.module if isinstance(like, rebuild.Resized) else like
    try:
        held = hashable(base)
        base = base if isinstance(held, Held) else held
    except TypeError:  # a field that is neither hashable nor a list: the module as given
        pass
    return rebuild.Resized(base, _sizes_from_record(record["sizes"], base))


def model_from_record(record: Any, *, trust=(), like=None):
    """Inverse of :func:`model_record`. A recorded class and the names in its fields must
    be trusted (:data:`jaxprune._spec.DEFAULT_TRUST` or ``trust``, checked before anything is
    imported); ``like``: the dense module the saved one was made from, used instead of
    importing anything (a registry model is always built from its record)."""
    if not isinstance(record, dict):
        raise ValueError("malformed model record in the saved model")
    if "name" in record:
        try:
            return models.model_from_config(record)
        except TypeError as err:
            raise ValueError(f"cannot rebuild the saved {record['name']!r}: {err}") from None
    if like is not None:
        return _from_like(record, like)
    if "spec" in record:
        return module_from_spec(record["spec"], trust)
    if "unrecorded" in record:
        info = record["unrecorded"] if isinstance(record["unrecorded"], dict) else {}
        raise ValueError(
            f"the saved model records only the sizes of its "
            f"{info.get('class', 'module')!r} ({info.get('reason', '')}): pass "
            "the dense module it was pruned from, load_model(dir, like=module)"
        )
    raise ValueError("malformed model record in the saved model")


NNX_JSON = "nnx.json"


def save_nnx(directory, module) -> pathlib.Path:
    """Save an NNX module's ``Param``/``BatchStat`` arrays (orbax) and their shapes.

    NNX modules are rebuilt by their own constructors, which jaxprune cannot call; so
    :func:`load_nnx` takes the constructor of the *dense* module and shrinks it to the shapes
    recorded here (``jaxprune.rebuild.smaller_nnx``) before restoring the arrays. The integer
    attributes of every submodule (``num_heads``: counts that no array shape shows) are
    recorded too and set on the rebuilt module where it has them.
    """
    directory = _abs(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / NNX_JSON).unlink(missing_ok=True)
    variables = to_host(variables_of(module))
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(directory / VARIABLES_DIR, variables, force=True)
    ckpt.wait_until_finished()
    ckpt.close()
    doc = {
        "format": "jaxprune-nnx/1",
        "class": type(module).__qualname__,
        "shapes": {"/".join(p): list(np.shape(a)) for p, a in leaves_with_paths(variables)},
        "counts": _int_attributes(module),
    }
    tmp = directory / (NNX_JSON + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    os.replace(tmp, directory / NNX_JSON)
    return directory


def _int_attributes(module) -> dict[str, dict[str, int]]:
    """``{"a/b": {attribute: int}}``: the plain int attributes of every submodule."""
    out = {}
    for path, layer in submodules(module):
        ints = {k: v for k, v in vars(layer).items() if type(v) is int and not k.startswith("_")}
        if ints:
            out["/".join(path)] = ints
    return out


def _set_counts(module, counts) -> None:
    """Set the recorded ``counts`` (:func:`_int_attributes`) on ``module``'s submodules that
    hold an int attribute of that name (plain ints only: nothing else from the file)."""
    if not isinstance(counts, dict):
        return
    for path, layer in submodules(module):
        recorded = counts.get("/".join(path))
        if not isinstance(recorded, dict):
            continue
        for name, value in recorded.items():
            if type(value) is int and type(vars(layer).get(name)) is int:
                setattr(layer, name, value)


def load_nnx(directory, build):
    """Restore a module saved by :func:`save_nnx`: ``build()`` makes the dense module (its
    constructor call, run under ``nnx.eval_shape`` so nothing is initialised), which is
    shrunk to the saved shapes and filled with the saved arrays."""
    d = _abs(directory)
    if not (d / NNX_JSON).is_file():
        raise FileNotFoundError(
            f"no saved NNX module in {d}: expected {NNX_JSON} and "
            f"{VARIABLES_DIR}/ (written by jaxprune.checkpoint.save_nnx)"
        )
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    module, _ = _restore_nnx(d, build, sharding)
    _set_counts(module, json.loads((d / NNX_JSON).read_text()).get("counts"))
    return module


def _restore_nnx(d: pathlib.Path, build, sharding):
    """``(module, variables)``: ``build()``'s module (made under ``nnx.eval_shape``) shrunk to
    the arrays saved in ``d/variables`` and holding them."""
    target = _abstract_from_metadata(d / VARIABLES_DIR, sharding)
    abstract = nnx.eval_shape(build)
    built = {p for p, _ in leaves_with_paths(variables_of(abstract))}
    saved = {p for p, _ in leaves_with_paths(target)}
    if built != saved:
        raise ValueError(
            f"{d}: the module built for it has other arrays than the saved one "
            f"(missing {sorted('/'.join(p) for p in saved - built)[:4]}, extra "
            f"{sorted('/'.join(p) for p in built - saved)[:4]})"
        )
    small = rebuild.smaller_nnx(abstract, target)
    ckpt = ocp.StandardCheckpointer()
    variables = ckpt.restore(d / VARIABLES_DIR, target)
    ckpt.close()
    variables = dict(variables)
    return with_variables(small, variables), variables


def is_model_dir(directory) -> bool:
    d = _abs(directory)
    return (d / MODEL_JSON).is_file() and (d / VARIABLES_DIR).is_dir()


def read_run_json(directory) -> dict | None:
    """The ``run.json`` a CLI command wrote into its output directory (``None``: none)."""
    path = _abs(directory) / RUN_JSON
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError:
        doc = None
    return doc if isinstance(doc, dict) else {"complete": False}


def read_model_json(directory) -> dict:
    """``model.json`` of a model directory; a directory holding an unfinished run of a
    command (its ``run.json`` says so) is refused."""
    d = _abs(directory)
    if not d.exists():
        raise FileNotFoundError(f"checkpoint directory does not exist: {d}")
    run = read_run_json(d)
    if run is not None and run.get("complete") is not True:
        raise ValueError(
            f"{d} holds an unfinished run (killed, or still running); re-run its "
            "command with --resume to finish it, or with --overwrite"
        )
    if not is_model_dir(d):
        raise FileNotFoundError(
            f"no saved model in {d}: expected {MODEL_JSON} and {VARIABLES_DIR}/ "
            "(written by jaxprune.checkpoint.save_model / `jaxprune train`)"
        )
    return json.loads((d / MODEL_JSON).read_text())


def _abstract_from_metadata(path: pathlib.Path, sharding):
    ckpt = ocp.StandardCheckpointer()
    md = ckpt.metadata(path)
    # a step written by StandardCheckpointer always has its item metadata
    tree = md.item_metadata.tree if hasattr(md, "item_metadata") else md  # pyright: ignore[reportOptionalMemberAccess]
    ckpt.close()

    def leaf(m):
        return jax.ShapeDtypeStruct(tuple(m.shape), np.dtype(m.dtype), sharding=sharding)

    is_leaf = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")  # noqa: E731
    return jax.tree.map(leaf, tree, is_leaf=is_leaf)


def load_model(directory, *, device=None, trust=(), like=None):
    """Restore ``(model, variables, meta)`` saved by :func:`save_model`.

    No template is needed: the model is rebuilt from ``model.json`` (:func:`model_from_record`)
    and array shapes come from the orbax metadata. ``model.json`` is untrusted data: a class
    or function it names outside jaxprune, Flax, JAX and NumPy is refused before anything is
    imported unless its package is in ``trust`` (e.g. ``trust=("mypkg",)``); ``like``: the
    dense Linen module the saved one was made from, used instead (nothing is imported). A
    registered NNX model comes back as the ``nnx.Module`` holding the arrays (``variables``
    are the same arrays as a dict). Raises ``FileNotFoundError`` when the directory or its
    files are missing, ``ValueError`` for an untrusted or malformed record.
    """
    d = _abs(directory)
    doc = read_model_json(d)
    device = device or jax.local_devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    record = doc.get("model")
    if isinstance(record, dict) and models.is_nnx_name(record.get("name", "")):
        cfg = {k: v for k, v in record.items() if k != "name"}
        module, variables = _restore_nnx(
            d, lambda: models.get_model(record["name"], **cfg), sharding
        )
        _verify_checksums(d, doc, variables)
        return module, variables, doc.get("meta", {})
    model = model_from_record(record, trust=trust, like=like)
    target = _abstract_from_metadata(d / VARIABLES_DIR, sharding)
    ckpt = ocp.StandardCheckpointer()
    variables = ckpt.restore(d / VARIABLES_DIR, target)
    ckpt.close()
    variables = {k: v for k, v in dict(variables).items()}
    _verify_checksums(d, doc, variables)
    meta = doc.get("meta", {})
    if meta.get("input_shape"):
        spec = tuple(meta["input_shape"])
        if np.dtype(meta.get("input_dtype", "float32")).kind in "iub":  # token ids
            spec = Example((np.zeros((1, *spec), meta["input_dtype"]),))
        _check_fits(d, model, variables, spec)
    return model, variables, meta


def _check_fits(directory, model, variables, input_shape) -> None:
    """``ValueError`` when the arrays are not the ones ``model.json``'s model creates."""
    try:
        created = abstract_init(model, input_shape, **mode_kwargs(model, False))
    except Exception as err:  # noqa: BLE001 - the saved description itself is broken
        raise ValueError(
            f"{directory}/{MODEL_JSON} describes a model that cannot be built for "
            f"inputs {input_shape}: {type(err).__name__}: "
            f"{first_line(err)}"
        ) from None
    bad = shape_mismatches(created, variables)
    if bad:
        listed = "; ".join(f"{'/'.join(p)}: model {a}, arrays {b}" for p, a, b in bad[:4])
        raise ValueError(f"{directory}: {MODEL_JSON} and {VARIABLES_DIR}/ do not match ({listed})")


# ----------------------------------------------------------------------------- training state


def training_manager(directory, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """CheckpointManager for per-epoch training state (step number = completed epochs).

    Saves are asynchronous: :func:`save_training_state` returns once the arrays are copied
    off the devices and orbax writes them in the background while training goes on; a step
    becomes visible only when its write has finished (orbax renames a finished temporary
    directory), so a run killed mid-write resumes from the previous epoch. ``close()`` waits
    for the last write. In a multi-process run every process calls these functions: orbax
    coordinates the processes and the main one writes.
    """
    d = _abs(directory)
    d.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=True
    )
    return ocp.CheckpointManager(d, options=options, item_names=("state", "meta"))


def latest_training_step(manager: ocp.CheckpointManager) -> int | None:
    manager.reload()
    return manager.latest_step()


def save_training_state(manager: ocp.CheckpointManager, epoch: int, state: Any, meta: dict):
    """Start saving ``state`` (pytree of arrays) + JSON ``meta`` as step ``epoch`` (returns
    before the files are written; see :func:`training_manager`)."""
    manager.save(
        epoch,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(to_jsonable(meta))
        ),
        force=True,
    )


def restore_training_state(manager: ocp.CheckpointManager, epoch: int, template: Any):
    """Restore step ``epoch`` into the structure/shardings of ``template`` -> (state, meta)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    out = manager.restore(
        epoch,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        ),
    )
    # orbax may hand back plain tuples for optax NamedTuples: re-impose the template's treedef.
    treedef = jax.tree.structure(template)
    state = jax.tree.unflatten(treedef, jax.tree.leaves(out["state"]))
    return state, dict(out["meta"])


def read_training_meta(manager: ocp.CheckpointManager, epoch: int) -> dict:
    out = manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])
