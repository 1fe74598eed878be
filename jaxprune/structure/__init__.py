"""Channel groups: which arrays a prunable neuron/filter lives in, derived by tracing the model.

A *channel group* is one output axis of a Dense/Conv kernel (a neuron or a filter index) together
with every array that indexes the same channels: the producer kernel(s) (their output axis), the
bias and normalisation parameters/statistics applied to those channels ("members"), and the
kernels that read the channels (their input axis: "consumers"). Residual adds tie the channels of
several producers into one group; a layer called at several sites (weight sharing) produces one
group, and the groups it reads at its call sites are tied.

Groups are found by abstract interpretation of the jaxpr of ``model.apply``: every Dense/Conv
output axis gets a label, labels flow through element-wise ops, broadcasts, reshapes (a
``conv → flatten → dense`` reshape becomes a *layout* ``(outer, size, inner)``: channel ``c`` owns
the flat indices ``(o·size + c)·inner + i``), pooling and transposes, and are recorded when they
reach a kernel's contracting axis. An axis may carry several groups at offsets (*segments*:
``concatenate`` along channels, DenseNet blocks and U-Net skips; a flattened ``(heads, dim)``
output), and a depthwise conv carries its input's groups through, its kernel a member. A
product of two activations (attention scores, ``weights @ v``) ties the labels on its batch
axes — the head axis of q, k and v becomes one group, whole heads are pruned — and freezes
those it contracts or leaves free (head_dim). A reshape that splits a channel axis into
``(heads, head_dim)`` (``Dense(H·D)`` then ``reshape``) and a ``split`` along channels (fused
qkv) split its group into parts that take over its arrays; the attention ties the heads of q,
k and v, and grouped-query attention prunes whole KV groups. A parameter is a kernel wherever
a ``dot_general`` contracts it with an activation, whatever its name or axis order (einsum
layers), unless its module also holds sub-layers. The per-primitive rules live in one table,
:data:`RULES` (primitive name -> rule, :mod:`jaxprune.structure._rules`; users add their own
with :func:`register_rule` or ``prune(..., rules=...)``); anything no rule
covers (a slice that cuts a channel axis, grouped convs, gathers) *freezes* the groups it
touches, so an unfamiliar model is pruned conservatively rather than wrongly. Groups whose
channels reach the network output (the logits) are never prunable.

Modules: ``_groups`` (the data model and its parameter/MAC counts), ``_labels`` (the labels
and the union-find of groups), ``_rules`` (the table), ``_trace`` (the walker and
:func:`trace_groups` / :func:`from_model` / :func:`from_params`), ``_layers`` (kernel layers
in call order for weight pruning, and the bare Dense-chain check :func:`dense_chain`).
Rule writers get the label type :class:`Info`, the rule building blocks (:func:`combine`,
:func:`elementwise`, :func:`gather`, :func:`reduction`, :func:`plain`, :data:`ELEMENTWISE`) and
the walker :func:`walk` that a tracing mode (:mod:`jaxprune.hidden`) runs with its own rules.
"""

from jaxprune._tree import path_of
from jaxprune.structure._groups import ArraySlot, ChannelGroup, Structure
from jaxprune.structure._labels import _Info as Info
from jaxprune.structure._layers import ConvSpec, KernelLayer, dense_chain, kernel_layers
from jaxprune.structure._residual import (
    Program,
    ResidualBranch,
    Residuals,
    flatten_program,
    residual_branches,
)
from jaxprune.structure._residual import _sub_jaxpr as sub_jaxpr
from jaxprune.structure._rules import _ELEMENTWISE as ELEMENTWISE
from jaxprune.structure._rules import (
    RULES,
    combine,
    elementwise,
    gather,
    plain,
    reduction,
    register_rule,
)
from jaxprune.structure._trace import from_model, from_params, trace_groups, walk

__all__ = [
    "ArraySlot",
    "ChannelGroup",
    "ConvSpec",
    "KernelLayer",
    "RULES",
    "Structure",
    "dense_chain",
    "from_model",
    "from_params",
    "kernel_layers",
    "path_of",
    "register_rule",
    "residual_branches",
    "ResidualBranch",
    "Residuals",
    "trace_groups",
    "flatten_program",
    "Program",
    # for writing rules and tracing modes (the contract: register_rule)
    "Info",
    "ELEMENTWISE",
    "combine",
    "elementwise",
    "gather",
    "plain",
    "reduction",
    "sub_jaxpr",
    "walk",
]
