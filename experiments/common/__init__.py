"""Code shared by the experiment scripts.

Imported as ``experiments.common`` (``from experiments.common import harness``), by the scripts
run as files or with ``python -m`` and by the tests alike.

* :mod:`common.harness`: method entries, test error, the validation batch ``S``.
* :mod:`common.protocol`: the multi-net Table-1 protocol of the MNIST scripts (dense nets,
  fine-tuning to convergence, random-subset null distribution, resumable rows, driver).
* :mod:`common.report`: its table, paired statistics, sentences, plot and README block.
* :mod:`common.filters`: the filter-pruning pipeline of the CIFAR-10 / ImageNet scripts
  (shared flags, whole-model ratio calibration, data-parallel train/prune/fine-tune driver,
  table).
* :mod:`common.numpy_reference`: plain-NumPy geometry/coreset algorithms for benchmarks.
"""
from jaxprune.cache import enable_compilation_cache

enable_compilation_cache()  # the scripts share compiled programs across runs ($JAXPRUNE_CACHE_DIR)

from experiments.common import filters, harness, numpy_reference, protocol, report  # noqa: E402
from experiments.common.filters import calibrate_ratio  # noqa: E402

__all__ = ["filters", "harness", "numpy_reference", "protocol", "report", "calibrate_ratio"]
