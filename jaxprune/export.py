"""Export a saved (pruned) model for use without jaxprune or the model's Python code.

Three artefacts, each with a JSON record beside it (``<out>.json``: input shapes and dtypes,
output shapes, widths, params, FLOPs, the module record, the jaxprune and jax versions):

* ``stablehlo`` — the model's inference function (Linen ``model.apply(variables, x,
  **inference flags)``, NNX in ``eval()`` mode) closed over its weights and serialized by
  :mod:`jax.export`; by default for a symbolic batch ``b`` (any batch size runs), else for
  ``batch``. Loading needs only JAX (and ``flatbuffers``, the ``export`` extra)::

      import jax, numpy as np
      f = jax.export.deserialize(bytearray(open("lenet.stablehlo", "rb").read()))
      logits = f.call(np.zeros((8, 28, 28, 1), np.float32))

* ``safetensors`` — the weights (``params.dense_0.kernel``, ``batch_stats.bn.mean``, ...),
  written by :func:`write_safetensors` (no dependency), for loaders outside JAX.
* ``onnx`` — the same inference function converted by ``jax2onnx`` (the ``onnx`` extra), run
  with ``onnxruntime``.

Example (a pruned LeNet-300-100 saved by ``jaxprune prune --out runs/pruned``)::

    from jaxprune import export
    record = export.export("runs/pruned", "deploy/lenet.stablehlo")   # also writes .json
    record["inputs"]   # [{"shape": ["b", 28, 28, 1], "dtype": "float32"}]

Command line: ``jaxprune export --checkpoint runs/pruned --out deploy/lenet.stablehlo``.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxprune
from jaxprune import checkpoint, models, workflows
from jaxprune._flax import apply_inference, first_line, mode_kwargs
from jaxprune._nnx import is_module, variables_of
from jaxprune._tree import leaves_with_paths, to_host
from jaxprune.pipeline import PruneWarning

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportWarning",
    "export",
    "export_model",
    "inference_function",
    "input_spec",
    "write_safetensors",
    "read_safetensors",
    "load_stablehlo",
]

FORMATS = ("stablehlo", "safetensors", "onnx")

#: The name of the symbolic batch dimension of a StableHLO export.
BATCH_DIM = "b"


class ExportError(ValueError):
    """A model or request that cannot be exported; the message is one line."""


class ExportWarning(PruneWarning):
    """The export went on differently than asked (e.g. a fixed batch instead of a symbolic
    one); the CLI prints it as one line."""


# ----------------------------------------------------------------------------- the function


def input_spec(model, meta: dict | None = None, input_shape=None, dtype=None):
    """``(per-example input shape, dtype)`` of a saved model: ``input_shape``/``dtype`` when
    given, else the checkpoint's ``meta`` (``input_shape``, ``input_dtype``), an NNX
    model's ``image``, the module's ``input_shape`` field or the registry's default.

    >>> input_spec(models.get_model("lenet300"))
    ((28, 28, 1), dtype('float32'))
    """
    meta = meta or {}
    dtype = np.dtype(dtype or meta.get("input_dtype") or np.float32)
    shape = input_shape or meta.get("input_shape")
    if shape is None and is_module(model):
        shape = dict(getattr(model, "init_args", ())).get("image")
    if shape is None:
        shape = getattr(model, "input_shape", None)
    if shape is None:
        try:
            shape = models.default_input_shape(models.model_config(model)["name"])
        except (TypeError, ValueError):
            raise ExportError(
                f"cannot tell the input shape of {type(model).__name__}; pass "
                "input_shape=(...) (one example, no batch axis)"
            ) from None
    return tuple(int(d) for d in shape), dtype


def inference_function(model, variables, apply_kwargs: dict | None = None) -> Callable:
    """``f(x) -> outputs``: ``model`` in inference mode with its weights closed over (they
    become constants of a traced function). Linen: ``model.apply(variables, x, **flags)``
    (:func:`jaxprune._flax.apply_inference`: ``apply_kwargs`` or the flags its signature
    takes); NNX: a copy of the module in ``eval()`` mode.

    >>> m = models.get_model("lenet300", widths=(8, 4))
    >>> v = m.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
    >>> inference_function(m, v)(np.zeros((2, 28, 28, 1), np.float32)).shape
    (2, 10)
    """
    if is_module(model):
        module = nnx.clone(model)
        module.eval()
        graphdef, state = nnx.split(module)
        kwargs = {**mode_kwargs(module, False), **(apply_kwargs or {})}

        def run_nnx(x):
            return nnx.merge(graphdef, state)(x, **kwargs)

        return run_nnx
    variables = jax.tree.map(jnp.asarray, to_host(variables))

    def run_linen(x):
        return apply_inference(model, variables, x, apply_kwargs)

    return run_linen


def _batch(batch) -> int | None:
    if batch is None:
        return None
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ExportError(f"batch must be a positive integer, got {batch!r}")
    return int(batch)


def _shape_json(shape) -> list:
    return [int(d) if isinstance(d, (int, np.integer)) else str(d) for d in shape]


def _avals_json(tree) -> list[dict]:
    return [
        {"shape": _shape_json(a.shape), "dtype": str(np.dtype(a.dtype))}
        for a in jax.tree.leaves(tree)
    ]


def _trace_error(err: Exception) -> str:
    return f"{type(err).__name__}: {first_line(err)}"


def _traced(f, spec, batch, what: str):
    """Run ``f(spec)`` for the ``(shape, dtype)`` ``spec`` with a symbolic batch when
    ``batch`` is ``None`` (falling back, with an :class:`ExportWarning`, to batch 1 when the
    model cannot take one), else with ``batch``. Returns ``(f's result, batch used,
    symbolic error or None)``."""
    shape, dtype = spec
    symbolic_error = None
    if batch is None:
        try:
            dims = jax.export.symbolic_shape(", ".join([BATCH_DIM] + [str(d) for d in shape]))
            return f(jax.ShapeDtypeStruct(dims, dtype)), BATCH_DIM, None
        except ExportError:
            raise
        except Exception as err:  # noqa: BLE001 - any tracing failure: a fixed batch instead
            symbolic_error = _trace_error(err)
            warnings.warn(
                f"{what}: the model cannot be traced for a symbolic batch "
                f"({symbolic_error}); exported for batch 1 instead (pass --batch "
                "N for another size)",
                ExportWarning,
                stacklevel=3,
            )
            batch = 1
    try:
        return f(jax.ShapeDtypeStruct((batch,) + shape, dtype)), batch, symbolic_error
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - the model's own failure, reported in one line
        raise ExportError(
            f"{what}: the model cannot run on inputs of shape "
            f"{(batch,) + shape} {np.dtype(dtype).name}: "
            f"{_trace_error(err)}"
        ) from None


# ----------------------------------------------------------------------------- StableHLO


def _export_stablehlo(f, spec, batch, platforms):
    try:
        import flatbuffers  # noqa: F401 - what jax.export's serialization needs
    except ImportError:
        raise ExportError(
            "--format stablehlo needs flatbuffers: pip install 'jaxprune[export]'"
        ) from None
    build = jax.export.export(jax.jit(f), platforms=platforms)
    exported, used, symbolic_error = _traced(build, spec, batch, "stablehlo")
    return exported.serialize(), exported.in_avals, exported.out_avals, used, symbolic_error


def load_stablehlo(path) -> jax.export.Exported:
    """The exported function in ``path`` (call it with ``.call(x)``); needs only JAX."""
    with open(path, "rb") as fh:
        return jax.export.deserialize(bytearray(fh.read()))


# ----------------------------------------------------------------------------- safetensors

_ST_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}
_ST_NUMPY = {v: k for k, v in _ST_DTYPES.items()}


def write_safetensors(path, tensors: dict[str, Any], metadata: dict[str, str] | None = None):
    """Write ``{name: array}`` as a safetensors file: an 8-byte little-endian header length,
    the JSON header ``{name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}``
    (padded with spaces to 8 bytes), then each array's little-endian bytes in header order.

    >>> write_safetensors("/tmp/w.safetensors", {"w": np.ones((2, 3), np.float32)})
    >>> read_safetensors("/tmp/w.safetensors")[0]["w"].shape
    (2, 3)
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        kind = _ST_DTYPES.get(arr.dtype.name)
        if kind is None:
            raise ExportError(f"safetensors cannot hold {name!r} of dtype {arr.dtype.name}")
        data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": kind,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = pathlib.Path(str(path) + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little"))
        fh.write(text)
        for data in blobs:
            fh.write(data)
    os.replace(tmp, path)


def read_safetensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file (the inverse of
    :func:`write_safetensors`, for any file of the format)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    body = memoryview(raw)[8 + size :]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = jnp.dtype(_ST_NUMPY[info["dtype"]]).newbyteorder("<")
        tensors[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(info["shape"])
    return tensors, metadata


def _named_tensors(variables) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(a) for p, a in leaves_with_paths(to_host(variables))}


# ----------------------------------------------------------------------------- ONNX


def _export_onnx(f, spec, batch):
    try:
        from jax2onnx import to_onnx  # pyright: ignore[reportMissingImports]  (optional extra)
    except ImportError:
        raise ExportError(
            "--format onnx needs jax2onnx and onnxruntime: pip install "
            "'jaxprune[onnx]' && pip install --no-deps jax2onnx"
        ) from None

    def build(s):
        try:
            return to_onnx(f, [s])
        except NotImplementedError as err:
            op = re.search(r"primitive '([^']+)'", str(err))
            if op is None:
                raise
            raise ExportError(
                f"onnx: jax2onnx cannot convert the JAX operation "
                f"{op.group(1)!r} of this model; export it as stablehlo"
            ) from None

    proto, used, symbolic_error = _traced(build, spec, batch, "onnx")
    return proto, used, symbolic_error


# ----------------------------------------------------------------------------- the record


def _layer_widths(variables) -> dict[str, int]:
    """Output width of each kernel layer, keyed by its '/'-joined params path."""
    out = {}
    for path, leaf in leaves_with_paths(to_host(variables)):
        if path[0] == "params" and path[-1] == "kernel":
            out["/".join(map(str, path[1:-1]))] = int(np.shape(leaf)[-1])
    return out


def _record(model, variables, meta, spec, fmt, out) -> dict:
    record_model = checkpoint.model_record(model)
    widths = getattr(model, "widths", None)
    sizes = workflows.size_report(workflows.runnable(model), variables, spec[0])
    return {
        "format": fmt,
        "artefact": os.path.basename(out),
        "model": checkpoint.to_jsonable(record_model),
        "widths": list(widths) if widths is not None else None,
        "layer_widths": _layer_widths(variables),
        "params": sizes["params"],
        "nonzero_params": sizes["nonzero_params"],
        "flops_per_example": sizes["flops"],
        **({"flops_error": sizes["flops_error"]} if "flops_error" in sizes else {}),
        "apply_kwargs": meta.get("apply_kwargs"),
        "versions": {"jaxprune": jaxprune.__version__, "jax": jax.__version__},
    }


def _write_json(path, doc) -> None:
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(checkpoint.to_jsonable(doc), fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- entry points


def export_model(
    model,
    variables,
    out,
    *,
    format: str = "stablehlo",
    batch: int | None = None,
    meta: dict | None = None,
    input_shape=None,
    dtype=None,
    apply_kwargs: dict | None = None,
    platforms=None,
    source=None,
) -> dict:
    """Export ``model`` holding ``variables`` (Linen, or an NNX module with ``variables``
    ``None``) to the file ``out`` and write ``<out>.json``; returns that record.

    ``batch``: the batch size of the exported function (``None``: a symbolic batch where the
    model allows it, else 1); ``meta``: a checkpoint's metadata (input shape, inference
    flags); ``platforms``: the StableHLO targets (default: this machine's backend);
    ``source``: the checkpoint it came from (recorded).

    >>> m = models.get_model("lenet300", widths=(8, 4))
    >>> v = m.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
    >>> export_model(m, v, "/tmp/lenet.stablehlo")["inputs"][0]["shape"]
    ['b', 28, 28, 1]
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; known formats: {', '.join(FORMATS)}")
    batch = _batch(batch)
    meta = dict(meta or {})
    if variables is None:
        if not is_module(model):
            raise ExportError("export_model needs the variables of a Linen model")
        variables = variables_of(model)
    if apply_kwargs is not None:
        meta["apply_kwargs"] = apply_kwargs
    spec = input_spec(model, meta, input_shape, dtype)
    f = inference_function(model, variables, meta.get("apply_kwargs"))
    out = os.path.abspath(os.fspath(out))
    if os.path.isdir(out):
        raise ExportError(f"--out must be a file path, and {out} is a directory")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    record = _record(model, variables, meta, spec, format, out)
    if source is not None:
        record["checkpoint"] = os.path.abspath(os.fspath(source))
    if format == "stablehlo":
        blob, ins, outs, used, symbolic_error = _export_stablehlo(f, spec, batch, platforms)
        _write_bytes(out, blob)
        record.update(
            platforms=list(platforms or [jax.default_backend()]),
            load="jax.export.deserialize(bytearray(open(path, 'rb').read())).call(x)",
        )
    elif format == "onnx":
        proto, used, symbolic_error = _export_onnx(f, spec, batch)
        _write_bytes(out, proto.SerializeToString())
        (ins, outs), used, _ = _traced(
            _with_outputs(f), spec, None if used == BATCH_DIM else used, format
        )
        record["load"] = (
            "onnxruntime.InferenceSession(path).run(None, {session.get_inputs()[0].name: x})"
        )
    else:
        (ins, outs), used, symbolic_error = _traced(_with_outputs(f), spec, batch, format)
        tensors = _named_tensors(variables)
        write_safetensors(
            out, tensors, {"format": "jaxprune", "producer": f"jaxprune {jaxprune.__version__}"}
        )
        record["tensors"] = {
            k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in tensors.items()
        }
    record.update(
        inputs=_avals_json(ins),
        outputs=_avals_json(outs),
        batch=used,
        symbolic_batch=not isinstance(used, int),
    )
    if symbolic_error:
        record["symbolic_batch_error"] = symbolic_error
    _write_json(out + ".json", record)
    return record


def _with_outputs(f):
    """``spec -> (spec, f's output shapes)`` (nothing is computed)."""
    return lambda spec: (spec, jax.eval_shape(f, spec))


def _write_bytes(path: str, data: bytes) -> None:
    with open(path + ".tmp", "wb") as fh:
        fh.write(data)
    os.replace(path + ".tmp", path)


def export(
    checkpoint_dir,
    out,
    *,
    format: str = "stablehlo",
    batch: int | None = None,
    trust=(),
    input_shape=None,
    dtype=None,
    apply_kwargs: dict | None = None,
    platforms=None,
) -> dict:
    """Export the model saved in ``checkpoint_dir`` (:func:`jaxprune.checkpoint.save_model`,
    ``jaxprune prune --out``) to ``out``; see :func:`export_model`. ``trust``: packages whose
    names the checkpoint may use (:func:`jaxprune.checkpoint.load_model`).

    >>> record = export("runs/pruned", "deploy/lenet.stablehlo")  # doctest: +SKIP
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; known formats: {', '.join(FORMATS)}")
    _batch(batch)
    model, variables, meta = workflows.load_checkpoint(os.fspath(checkpoint_dir), trust)
    return export_model(
        model,
        variables,
        out,
        format=format,
        batch=batch,
        meta=meta,
        input_shape=input_shape,
        dtype=dtype,
        apply_kwargs=apply_kwargs,
        platforms=platforms,
        source=checkpoint_dir,
    )
