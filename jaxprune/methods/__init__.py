"""Pruning methods: one contract (:mod:`jaxprune.methods._base`), one registry.

Structured (``kind="channels"``): ``coreset`` (ours), ``l1_norm``, ``l2_norm``, ``random``,
``pvc``, ``pfp``, ``frank_wolfe``, ``frank_wolfe_momentum``. Unstructured
(``kind="weights"``): ``magnitude``, ``sipp``. Every built-in method registers itself when
its module is imported below.
"""
from jaxprune.methods._base import (KINDS, SAMPLINGS, LayerInput, LayerView, Method, Selection,
                                    WeightView, get, keyword_options, names, per_view, register,
                                    split_keys)
from jaxprune.methods import (coreset, frank_wolfe, magnitude, norms, pfp, pvc,  # noqa: F401
                              random, sipp)

__all__ = ["KINDS", "SAMPLINGS", "LayerInput", "LayerView", "Method", "Selection", "WeightView",
           "get", "keyword_options", "names", "per_view", "register", "split_keys"]
