"""Flax Linen plumbing: applying a module in inference mode and watching its kernel layers.

Every part that needs to know what a network's Dense/Conv layers do on an input (their
inputs, their configuration, their call order, their MACs) goes through one helper,
:func:`kernel_calls`, a wrapper of :func:`flax.linen.intercept_methods` that reports each
``__call__`` of a module owning a ``'kernel'`` parameter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import errors as flax_errors

from jaxprune._tree import as_variables

Path = tuple[str, ...]


def has_kernel(module: nn.Module) -> bool:
    """True for a bound module that owns a ``'kernel'`` parameter (Dense, Conv, ...)."""
    try:
        params = module.variables.get("params", {})
    except Exception:  # unbound module / no scope: nothing to look at
        return False
    return isinstance(params, Mapping) and "kernel" in params


# Flags by which Flax modules switch between training and inference, and their value in
# *training* mode; inference is the negation.
MODE_FLAGS = {
    "train": True,
    "training": True,
    "is_training": True,
    "deterministic": False,
    "use_running_average": False,
}


def _call_signature(model: nn.Module):
    """``inspect.signature`` of the ``__call__`` that ``model.apply`` runs (wrappers that
    forward ``*args, **kwargs`` to a ``wrapped_module`` are looked through)."""
    target = model
    while getattr(target, "wrapped_module", None) is not None:
        target = target.wrapped_module
    try:
        return inspect.signature(type(target).__call__)
    except (TypeError, ValueError):
        return None


def mode_kwargs(model: Any, train: bool) -> dict:
    """The keyword arguments that put ``model`` in training (``train=True``) or inference
    mode, found from its ``__call__`` signature (:data:`MODE_FLAGS`); ``{}`` when it takes
    none of them (a module without a mode, e.g. ``nn.Sequential``)."""
    sig = _call_signature(model)
    if sig is None:
        return {}
    return {
        name: (value if train else not value)
        for name, value in MODE_FLAGS.items()
        if name in sig.parameters
    }


def inference_kwargs(model: nn.Module, apply_kwargs: Mapping | None = None) -> dict:
    """``apply_kwargs`` when given, else :func:`mode_kwargs` ``(model, train=False)``."""
    if apply_kwargs is not None:
        if not isinstance(apply_kwargs, Mapping):
            raise ValueError(
                f"apply_kwargs must be a dict of keyword arguments for "
                f"model.apply, got {type(apply_kwargs).__name__}"
            )
        return dict(apply_kwargs)
    return mode_kwargs(model, train=False)


def apply_inference(model: nn.Module, variables, x, apply_kwargs: Mapping | None = None):
    """``model.apply(variables, x, **inference_kwargs(model, apply_kwargs))``; ``x`` an
    :class:`Example` is spread into the call's positional and keyword arguments.

    Never falls back to training mode: a module that needs randomness or updates state in
    the call it was given raises a ``ValueError`` that names ``apply_kwargs``.
    """
    kwargs = inference_kwargs(model, apply_kwargs)
    args, call_kwargs = x.call() if isinstance(x, Example) else ((x,), {})
    try:
        return model.apply(variables, *args, **call_kwargs, **kwargs)
    except (flax_errors.InvalidRngError, flax_errors.ModifyScopeVariableError, TypeError) as err:
        if isinstance(err, TypeError) and not any(
            s in str(err) for s in ("keyword argument", "required positional argument")
        ):
            raise
        raise ValueError(
            f"cannot run {type(model).__name__} in inference mode with "
            f"model.apply(variables, x, **{kwargs}): {type(err).__name__}: "
            f"{first_line(err)} -- pass apply_kwargs={{...}} (the keyword "
            "arguments of its inference call, e.g. {'deterministic': True})"
        ) from None


_INPUT_SHAPE_HOOKS: list[Callable[[nn.Module], Any]] = []


def add_input_shape_hook(hook: Callable[[nn.Module], Any]) -> None:
    """Teach :func:`default_input_shape` a source of input shapes: ``hook(model)`` returns a
    per-example shape, or ``None`` for a model it does not know (the model registry adds one)."""
    _INPUT_SHAPE_HOOKS.append(hook)


def default_input_shape(model: nn.Module):
    """The first per-example input shape a hook knows for ``model``, else ``None``."""
    for hook in reversed(_INPUT_SHAPE_HOOKS):
        shape = hook(model)
        if shape is not None:
            return shape
    return None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message ('' for an empty one)."""
    return (str(err).splitlines() or [""])[0]


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct, np.generic))


@jax.tree_util.register_pytree_node_class
class Example:
    """The inputs of one model call: positional ``args`` and keyword ``kwargs``.

    Arrays (any dtype: float images, int32 token ids, bool masks) are the pytree's leaves, each
    a batch along its first axis; ``None`` and other Python values (flags, strings) are static
    and passed as they are. :meth:`of` reads the forms ``prune(example_inputs=...)`` takes."""

    def __init__(self, args=(), kwargs=None, dynamic=None):
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        leaves = jax.tree_util.tree_leaves((self.args, self.kwargs))
        self.dynamic = tuple(map(_is_array, leaves)) if dynamic is None else dynamic

    @classmethod
    def of(cls, value) -> Example:
        """An array (one positional argument), a tuple/list (positional arguments, ``None``
        allowed) or a dict (keyword arguments); at least one array."""
        if isinstance(value, Example):
            return value
        if isinstance(value, Mapping):
            ex = cls((), value)
        elif isinstance(value, (tuple, list)):
            ex = cls(value)
        else:
            ex = cls((value if _is_array(value) else np.asarray(value),))
        if not any(ex.dynamic):
            raise ValueError(
                "example inputs hold no array: give an array, a tuple of "
                "positional arguments or a dict of keyword arguments"
            )
        return ex

    def tree_flatten(self):
        leaves, treedef = jax.tree_util.tree_flatten((self.args, self.kwargs))
        static = tuple((i, v) for i, (v, d) in enumerate(zip(leaves, self.dynamic)) if not d)
        return [v for v, d in zip(leaves, self.dynamic) if d], (treedef, static, self.dynamic)

    @classmethod
    def tree_unflatten(cls, aux, children):
        treedef, static, dynamic = aux
        leaves, it, fixed = [], iter(children), dict(static)
        for i, d in enumerate(dynamic):
            leaves.append(next(it) if d else fixed[i])
        args, kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
        return cls(args, kwargs, dynamic)

    def call(self) -> tuple[tuple, dict]:
        return self.args, self.kwargs

    @property
    def arrays(self) -> list:
        return jax.tree_util.tree_leaves(self)

    @property
    def batch(self) -> int:
        """Examples in the batch (the first axis of every array)."""
        sizes = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in self.arrays}
        if len(sizes) != 1 or -1 in sizes:
            raise ValueError(
                f"every input array must be a batch along its first axis of one "
                f"size; got shapes {[np.shape(a) for a in self.arrays]}"
            )
        return sizes.pop()

    def abstract(self, batch: int) -> Example:
        """``ShapeDtypeStruct`` leaves with ``batch`` examples."""
        return jax.tree.map(
            lambda a: jax.ShapeDtypeStruct((batch, *np.shape(a)[1:]), np.dtype(a.dtype)), self
        )

    def zeros(self, batch: int) -> Example:
        """Zero arrays of the same dtypes with ``batch`` examples (what the tracer runs on)."""
        return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), self.abstract(batch))

    def take(self, start: int, stop: int) -> Example:
        """Examples ``start:stop`` of every array."""
        return jax.tree.map(lambda a: a[start:stop], self)

    def __repr__(self):
        shapes = jax.tree.map(lambda a: f"{np.dtype(a.dtype).name}{list(np.shape(a))}", self)
        return f"Example(args={shapes.args}, kwargs={shapes.kwargs})"


def as_example(inputs) -> Example:
    """``inputs`` as an :class:`Example`: an Example as it is, a per-example shape (ints,
    no batch axis) as one float32 positional input."""
    if isinstance(inputs, Example):
        return inputs
    return Example((jax.ShapeDtypeStruct((1, *map(int, inputs)), jnp.float32),))


def input_spec(data):
    """What the per-example helpers take for a batch ``data``: an :class:`Example` as it is,
    an array's per-example shape."""
    return data if isinstance(data, Example) else tuple(np.shape(data)[1:])


def abstract_init(model: nn.Module, input_shape, **kwargs):
    """``model.init`` on one example of ``input_shape`` (a shape or an :class:`Example`) under
    ``jax.eval_shape``: the variables it creates, as ``ShapeDtypeStruct`` (nothing is
    computed)."""

    def init(k, inp):
        args, call_kwargs = inp.call()
        return model.init(k, *args, **call_kwargs, **kwargs)

    return jax.eval_shape(init, jax.random.key(0), as_example(input_shape).abstract(1))


@contextlib.contextmanager
def kernel_calls(on_call: Callable[[nn.Module, Any, Any], None], every_module: bool = False):
    """Within the block, ``on_call(module, input, output)`` runs after every ``__call__``
    of a kernel-bearing module (``input`` is its first positional argument);
    ``every_module``: after every method call of any module (``input`` may be None)."""

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if every_module and module.scope is not None:
            on_call(module, args[0] if args else None, out)
        elif context.method_name == "__call__" and args and has_kernel(module):
            on_call(module, args[0], out)
        return out

    with nn.intercept_methods(interceptor):
        yield


def scope_path(scope) -> Path:
    """Variables path of a Flax scope, read from its parent chain (a scope re-rooted by
    ``nn.share_scope`` keeps a stale ``scope.path``)."""
    names = []
    while scope is not None and scope.parent is not None:
        names.append(scope.name)
        scope = scope.parent
    return tuple(reversed(names))


def module_path(module: nn.Module) -> Path:
    """Params path of a bound module (``('dense_0',)``, ``('stage_1', 'block_0', 'conv_0')``)."""
    return scope_path(module.scope)


def trace_kernel_calls(
    model: nn.Module,
    variables,
    input_shape,
    on_call,
    apply_kwargs: Mapping | None = None,
    every_module: bool = False,
) -> None:
    """Run :func:`kernel_calls` over one abstract (``jax.eval_shape``) inference call of
    ``model`` on a batch of one example of ``input_shape`` (a shape or an :class:`Example`);
    nothing is computed."""
    variables, _ = as_variables(variables)

    def run(v, x):
        with kernel_calls(on_call, every_module):
            return apply_inference(model, v, x, apply_kwargs)

    jax.eval_shape(run, variables, as_example(input_shape).abstract(1))


def kernel_modules(
    model: nn.Module, variables, input_shape, apply_kwargs: Mapping | None = None
) -> dict[Path, nn.Module]:
    """``{module path: the kernel-bearing module, unbound}`` in the order of their last call
    (their configuration: a Conv's strides, padding, dilation)."""
    found: dict[Path, nn.Module] = {}

    def record(module, _x, _out):
        path = module_path(module)
        found.pop(path, None)  # re-insert: order of the last call
        found[path] = module.clone(parent=None)

    trace_kernel_calls(model, variables, input_shape, record, apply_kwargs)
    return found


def _capture_impl(model: nn.Module, apply_kwargs, variables, images):
    captured = {}

    def record(module, x, _out):
        captured[module_path(module)] = x

    with kernel_calls(record):
        apply_inference(model, variables, images, dict(apply_kwargs))
    return captured


_capture = jax.jit(_capture_impl, static_argnums=(0, 1))


def _freeze_value(value) -> Any:
    if isinstance(value, nn.Module):
        return hashable(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_value(v) for v in value)
    return value


def hashable(model: nn.Module) -> nn.Module:
    """``model``, or an equal module whose list fields are tuples (e.g. ``nn.Sequential([...])``),
    so that it can be a static argument of ``jax.jit`` (compiled once per model). A module
    with a field that stays unhashable (a config object, a dict) is wrapped in
    :class:`Held`, hashed by identity (one per model object, so compiled once per model)."""
    try:
        hash(model)
        return model
    except TypeError:
        pass
    updates = {
        f.name: _freeze_value(getattr(model, f.name))
        for f in dataclasses.fields(model)
        if f.init and f.name not in ("parent", "name")
    }
    frozen = model.clone(**updates)
    try:
        hash(frozen)
        return frozen
    except TypeError:
        return _held(model)


class _Ref:
    """A value behind an identity hash (a field of a Linen module that must hash)."""

    def __init__(self, value):
        self.value = value


class Held(nn.Module):
    """``ref.value``, a Linen module with unhashable fields, run in this module's scope (its
    variables keep their paths); hashed by the identity of ``ref``."""

    ref: _Ref

    @property
    def wrapped_module(self) -> nn.Module:
        return self.ref.value

    def setup(self):
        self.inner = self.ref.value.clone()
        nn.share_scope(self, self.inner)

    def __call__(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


_HELD: dict[int, tuple[nn.Module, Held]] = {}


def _held(model: nn.Module) -> Held:
    """The one :class:`Held` of ``model`` (kept with the model, so its id stays its own)."""
    if id(model) not in _HELD or _HELD[id(model)][0] is not model:
        _HELD[id(model)] = (model, Held(_Ref(model)))
    return _HELD[id(model)][1]


def kernel_inputs(
    model: nn.Module,
    variables,
    images,
    *,
    batch_size: int = 256,
    apply_kwargs: Mapping | None = None,
) -> dict[Path, np.ndarray]:
    """``{module path: its input on images}`` (host arrays) for every kernel-bearing module.

    ``images``: (N, *input_shape), run as float32, or an :class:`Example` (arrays of any
    dtype, N examples each, passed as they are); the model runs in inference mode in chunks
    of ``batch_size``. A module called more than once (weight sharing) keeps its last call's
    input.
    """
    variables, _ = as_variables(variables)
    if not isinstance(images, Example):
        images = np.asarray(images)
        if images.ndim < 2 or images.shape[0] == 0:
            raise ValueError(f"images must be a non-empty batch (N, ...), got shape {images.shape}")
        images = Example((images.astype(np.float32),))
    static = hashable(model)
    kwargs = tuple(sorted(inference_kwargs(model, apply_kwargs).items()))
    chunks = []
    for start in range(0, images.batch, int(batch_size)):
        part = jax.tree.map(jnp.asarray, images.take(start, start + int(batch_size)))
        chunks.append(jax.device_get(_capture(static, kwargs, variables, part)))
    if not chunks[0]:
        raise ValueError(
            f"{type(model).__name__}: no submodule with a 'kernel' parameter was "
            "called; nothing to capture"
        )
    return {path: np.concatenate([c[path] for c in chunks], axis=0) for path in chunks[0]}


def kernel_io(
    model: nn.Module, variables, images, *, paths=None, apply_kwargs: Mapping | None = None
) -> dict[Path, tuple[Any, Any]]:
    """``{module path: (its input, its output)}`` of the kernel-bearing modules in ONE
    inference call of ``model`` on the batch ``images`` (traceable: meant to run inside
    ``jax.jit``; nothing is chunked or moved to the host).

    ``paths``: only these module paths are kept (the others are not returned, so under jit
    their activations are not materialised as outputs); ``None``: all. The output is the
    module's return value (a Dense/Conv: the pre-activation, bias included). A module called
    more than once keeps its last call.
    """
    keep = None if paths is None else {tuple(p) for p in paths}
    captured: dict[Path, tuple[Any, Any]] = {}

    def record(module, x, out):
        path = module_path(module)
        if keep is None or path in keep:
            captured[path] = (x, out)

    with kernel_calls(record):
        apply_inference(model, as_variables(variables)[0], images, apply_kwargs)
    return captured
