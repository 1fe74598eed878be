"""Pruning methods: one contract (:mod:`jaxprune.methods._base`), one registry.

Structured (``kind="channels"``): ``coreset`` (ours), ``l1_norm``, ``l2_norm``, ``random``,
``pvc``, ``pfp``, ``frank_wolfe``, ``frank_wolfe_momentum``. Unstructured
(``kind="weights"``): ``magnitude``, ``sipp``. Every built-in method registers itself when
its module is imported below. Each name here is the method's class: calling it with options
gives a configured method for ``jaxprune.prune(..., method=...)``::

    jaxprune.prune(params, 0, 0.5, method=jaxprune.methods.coreset(projection_dim=5))

The implementation modules keep their functions: ``from jaxprune.methods.coreset import
weighted_sensitivity``.
"""

from jaxprune.methods import coreset as _coreset
from jaxprune.methods import flap as _flap
from jaxprune.methods import frank_wolfe as _frank_wolfe
from jaxprune.methods import magnitude as _magnitude
from jaxprune.methods import norms as _norms
from jaxprune.methods import pfp as _pfp
from jaxprune.methods import pvc as _pvc
from jaxprune.methods import random as _random
from jaxprune.methods import sipp as _sipp
from jaxprune.methods import wanda_sp as _wanda_sp
from jaxprune.methods._base import (
    KINDS,
    REQUIRED,
    SAMPLINGS,
    LayerInput,
    LayerView,
    Method,
    Selection,
    WeightView,
    each_view,
    get,
    names,
    register,
    split_keys,
)

coreset = _coreset.Coreset
frank_wolfe = _frank_wolfe.FrankWolfe
frank_wolfe_momentum = _frank_wolfe.FrankWolfeMomentum
l1_norm = _norms.L1Norm
l2_norm = _norms.L2Norm
magnitude = _magnitude.Magnitude
pfp = _pfp.PFP
pvc = _pvc.PVC
random = _random.Random
sipp = _sipp.SiPP
flap = _flap.FLAP
wanda_sp = _wanda_sp.WandaSP

__all__ = [
    "KINDS",
    "REQUIRED",
    "SAMPLINGS",
    "LayerInput",
    "LayerView",
    "Method",
    "Selection",
    "WeightView",
    "each_view",
    "get",
    "names",
    "register",
    "split_keys",
    "coreset",
    "frank_wolfe",
    "frank_wolfe_momentum",
    "l1_norm",
    "l2_norm",
    "magnitude",
    "pfp",
    "pvc",
    "random",
    "sipp",
    "flap",
    "wanda_sp",
]
