"""An output directory holds one whole run of one command.

:func:`output_run` guards a command's ``--out``:

* ``run.json`` is written *first*, saying the run is unfinished, and rewritten *last*, saying it
  is complete; :func:`jaxprune.checkpoint.load_model` refuses a directory whose run is
  unfinished, so a run killed at any moment never passes for a finished one;
* an existing ``--out`` is refused unless ``overwrite`` (its contents are removed first) or
  ``resume`` (it must be the same run: its recorded identity — command, model, dataset, data
  limits, training config, parent checkpoint fingerprint — equals this one's);
* a lock file beside ``--out`` (``.<name>.lock``, ``flock``) refuses a second process writing
  the same ``--out`` while the first runs; the kernel releases it when a process dies.

In a multi-process run every process checks, then the main process locks and writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time

from jaxprune import checkpoint, distributed

__all__ = ["RunError", "output_run", "fingerprint", "run_state"]

RUN_JSON = checkpoint.RUN_JSON


class RunError(ValueError):
    """An output directory that this run may not write (one-line message)."""


def fingerprint(directory) -> str:
    """SHA-256 of a model directory's ``model.json`` and saved arrays (``variables/``)."""
    root = os.path.abspath(directory)
    digest = hashlib.sha256()
    paths = [os.path.join(root, checkpoint.MODEL_JSON)]
    for folder, dirs, files in os.walk(os.path.join(root, checkpoint.VARIABLES_DIR)):
        dirs.sort()
        paths += [os.path.join(folder, f) for f in sorted(files)]
    for path in paths:
        digest.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def run_state(out) -> str:
    """``"absent"`` (missing or empty), ``"complete"``, ``"unfinished"`` or ``"foreign"``
    (files, but no ``run.json``: not a run of a jaxprune command)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError(f"--out {out} is an existing file, not a directory")
    if not os.path.isdir(out) or not os.listdir(out):
        return "absent"
    doc = checkpoint.read_run_json(out)
    if doc is None:
        return "foreign"
    return "complete" if doc.get("complete") is True else "unfinished"


def _difference(saved: dict, new: dict) -> str | None:
    """The first identity entry that differs, as ``"key (saved X, now Y)"``."""
    for key in sorted(set(saved) | set(new)):
        if saved.get(key) != new.get(key):
            return f"{key} (recorded {_short(saved.get(key))}, now {_short(new.get(key))})"
    return None


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(out: str, identity: dict, overwrite: bool, resume: bool, resumable: bool = True) -> str:
    """The state of ``out`` (:func:`run_state`) if this run may write it, else
    :class:`RunError`."""
    state = run_state(out)
    if state == "foreign":
        raise RunError(
            f"--out {out} holds files that are not a jaxprune run; remove them or use another --out"
        )
    if state == "absent" or overwrite:
        return state
    if not resume:
        what = "another run" if state == "complete" else "an unfinished run"
        raise RunError(
            f"--out {out} already holds {what}; pass --overwrite to replace it"
            + (" or --resume to continue it" if resumable else "")
        )
    # a complete or unfinished run has a run.json (run_state)
    saved = checkpoint.read_run_json(out).get("identity") or {}  # pyright: ignore[reportOptionalMemberAccess]
    diff = _difference(saved, checkpoint.to_jsonable(identity))
    if diff:
        raise RunError(
            f"--resume: --out {out} holds another run: its {diff} differs; use "
            "another --out, or --overwrite to replace it"
        )
    return state


@contextlib.contextmanager
def _lock(out: str):
    """Hold ``.<name>.lock`` beside ``out`` (only the main process locks)."""
    if not distributed.is_main():
        yield
        return
    path = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.lock")
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunError(f"cannot write --out {out}: {err.strerror} ({err.filename})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(
                f"another process is writing --out {out} (it holds {path}); wait "
                "for it to finish or use another --out"
            ) from None
        yield
    finally:
        os.close(fd)


def _clear(out: str) -> None:
    for name in os.listdir(out):
        path = os.path.join(out, name)
        if name == RUN_JSON:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _write_run_json(out: str, identity: dict, complete: bool, started: float) -> None:
    doc = {
        "identity": checkpoint.to_jsonable(identity),
        "complete": complete,
        "started": started,
        **({"finished": time.time()} if complete else {}),
    }
    tmp = os.path.join(out, RUN_JSON + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(out, RUN_JSON))


@contextlib.contextmanager
def output_run(
    out, identity: dict, *, overwrite: bool = False, resume: bool = False, resumable: bool = True
):
    """Hold ``out`` for one run of a command whose ``identity`` (JSON-able) says what it
    computes; yields the absolute path. ``resumable=False``: the command cannot continue a
    run (``--resume`` is not offered). Raises :class:`RunError` (see the module docstring).
    When the block raises an error, what this run wrote is removed (an interrupt keeps it, to
    be continued with ``resume``)."""
    out = os.path.abspath(os.fspath(out))
    if overwrite and resume:
        raise RunError("pass --overwrite or --resume, not both")
    _check(out, identity, overwrite, resume, resumable)  # every process, before any writes
    distributed.barrier("jaxprune.output_run.checked")
    with _lock(out):
        started = time.time()
        if distributed.is_main():
            state = _check(out, identity, overwrite, resume, resumable)  # final, under the lock
            os.makedirs(out, exist_ok=True)
            _write_run_json(out, identity, False, started)  # first: the run is unfinished
            if overwrite:
                _clear(out)
        distributed.barrier("jaxprune.output_run.started")
        try:
            yield out
        except Exception:
            if distributed.is_main() and not (resume and state != "absent"):
                shutil.rmtree(out, ignore_errors=True)
            raise
        distributed.barrier("jaxprune.output_run.done")
        if distributed.is_main():
            _write_run_json(out, identity, True, started)  # last: the run is complete
