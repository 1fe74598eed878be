"""Sphinx configuration of the jaxprune documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (the ``docs`` extra).
The guides are MyST notebooks executed at build time and cached in
``docs/_build/.jupyter_cache`` (a guide runs again only when its code changes).
"""

from __future__ import annotations

import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

# the notebooks' kernels inherit this: CPU only, no GPU probing
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# the guides compile far more than they run: XLA:CPU's cheap options (as the test suite)
if "optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
    ).strip()

import jaxprune  # noqa: E402 - after sys.path


def _drop_stale_stubs() -> None:
    """Delete autosummary pages of names no API page lists any more (autosummary writes new
    pages but never removes old ones, which would then be orphans)."""
    stubs = DOCS / "api" / "_autosummary"
    if not stubs.is_dir():
        return
    listed = set()
    for page in (DOCS / "api").glob("*.md"):
        module = None
        for line in page.read_text().splitlines():
            if line.startswith(".. currentmodule:: "):
                module = line.split(":: ", 1)[1].strip()
            elif module and line.startswith("   ") and not line.strip().startswith(":"):
                listed.add(f"{module}.{line.strip()}")
    for stub in stubs.glob("*.rst"):
        if stub.stem not in listed:
            stub.unlink()


_drop_stale_stubs()

project = "jaxprune"
author = "the jaxprune authors"
copyright = "the jaxprune authors, Apache-2.0"
release = jaxprune.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "api_coverage",
    "docstring_text",
]

exclude_patterns = ["_build", "**/.ipynb_checkpoints", "README.md"]
templates_path = ["_templates"]
html_static_path = []

# --- MyST and notebook execution ----------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "cache"
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# Markdown outputs (a table built in a cell) are read as MyST, which has tables
nb_render_markdown_format = "myst"

# --- API reference -------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# --- HTML ----------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"jaxprune {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    # the sidebar lists the current page's branch only: the whole tree (about 450 API pages)
    # on every page makes writing the HTML quadratic in the number of pages
    "collapse_navbar": True,
}
html_last_updated_fmt = None
