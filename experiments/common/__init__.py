"""Code shared by the experiment scripts.

A script run as ``python experiments/<script>.py`` has ``experiments/`` on ``sys.path``, so
``from common import harness`` finds this package.

* :mod:`common.harness`: one pruning trial (prune -> same fine-tune budget -> measure) and the
  (ratio × method × seed) grid of the MNIST scripts.
* :mod:`common.tables`: per-(ratio, method) summaries, markdown tables, error-vs-ratio plots.
* :mod:`common.filters`: the filter-pruning pipeline of the CIFAR-10 / ImageNet scripts
  (shared flags, whole-model ratio calibration, data-parallel train/prune/fine-tune driver,
  table).
* :mod:`common.numpy_reference`: plain-NumPy geometry/coreset algorithms for benchmarks.
"""
from . import filters, harness, numpy_reference, tables
from .filters import calibrate_ratio

__all__ = ["filters", "harness", "numpy_reference", "tables", "calibrate_ratio"]
