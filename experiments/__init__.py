"""The experiment scripts of jaxprune (not part of the installed package): one script per study
(``lenet300_mnist``, ``reconstruct_mnist``, ``bench_prune``, ...), the code they share in
``experiments.common`` and the bounds-paper lab in ``experiments.bounds_lab``, and the committed
results under ``experiments/results/``. Everything here imports with absolute names
(``from experiments.common import protocol``, ``from experiments import bench_cache``), and each
script runs both as ``python experiments/<name>.py`` from the repository root (a few lines at its
top put the repository root on ``sys.path`` when it runs as a file) and as
``python -m experiments.<name>``; tests import the scripts as modules
(``from experiments import lenet300_mnist``).
"""
