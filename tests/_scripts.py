"""Import an ``experiments/*.py`` script as a module (the scripts are not a package).

A script run as ``python experiments/<script>.py`` has ``experiments/`` on ``sys.path`` (that
is how it finds ``experiments/common``); :func:`load` puts it there too.
"""
import importlib.util
import pathlib
import sys

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def load(name: str):
    """The module of ``experiments/<name>.py``, executed under the name ``_exp_<name>``."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"_exp_{name}", EXPERIMENTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
