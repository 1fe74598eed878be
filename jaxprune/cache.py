"""JAX's persistent compilation cache, on by default for the CLI and the experiment scripts.

Most of a first ``prune`` is XLA compilation; the cache keeps compiled programs on disk, so a
second process with the same shapes loads them instead of compiling. The directory is
``$JAXPRUNE_CACHE_DIR`` (``off`` disables it), else ``~/.cache/jaxprune/xla``
(``$XDG_CACHE_HOME`` is honoured). Library users call :func:`enable_compilation_cache` once,
before their first jitted call.
"""

from __future__ import annotations

import os
import pathlib

import jax

__all__ = ["enable_compilation_cache", "default_cache_dir", "user_cache_dir"]


def user_cache_dir(*parts: str) -> str:
    """``$XDG_CACHE_HOME/jaxprune/<parts>`` (default ``~/.cache/jaxprune/<parts>``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxprune", *parts)


def default_cache_dir() -> str | None:
    """``$JAXPRUNE_CACHE_DIR``, ``None`` when it is ``off``, else the user cache folder."""
    value = os.environ.get("JAXPRUNE_CACHE_DIR")
    if value is not None:
        return None if value.strip().lower() in ("off", "0", "none", "") else value
    return user_cache_dir("xla")


def enable_compilation_cache(
    directory: str | os.PathLike | None = None, min_compile_seconds: float = 0.0
) -> str | None:
    """Point JAX's persistent compilation cache at ``directory`` (default
    :func:`default_cache_dir`); programs that took at least ``min_compile_seconds`` to
    compile are stored. Returns the directory, or ``None`` when the cache is off; a path
    that cannot be a directory is a one-line ``ValueError``."""
    path = directory if directory is not None else default_cache_dir()
    if path is None:
        return None
    path = pathlib.Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(
            f"the compilation cache directory {path} ($JAXPRUNE_CACHE_DIR or "
            "~/.cache/jaxprune/xla) is a file or lies under one; point "
            "JAXPRUNE_CACHE_DIR at a directory, or set it to 'off'"
        ) from None
    except PermissionError:
        raise ValueError(
            f"the compilation cache directory {path} cannot be created "
            "(permission denied); point JAXPRUNE_CACHE_DIR elsewhere, or set it "
            "to 'off'"
        ) from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(path)
