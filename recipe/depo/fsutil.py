"""Publishing a fully written directory so readers see the old one or the new one, never a mix;
reading back the JSON inside one with errors that name the file; checking, before any work, that
an output can be written."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path


def publish_dir(tmp: str, final: str) -> None:
    """Move the complete directory ``tmp`` to ``final``, replacing what is there.

    ``tmp`` must be on the same filesystem as ``final`` (create it beside ``final``). A directory
    cannot be ``os.replace``d onto a non-empty one, so the old one is moved aside first: at every
    instant ``final`` is the old or the new complete directory (or briefly absent), never partial.
    """
    if os.path.exists(final):
        old = f"{final}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def read_json(path: str, what: str) -> dict:
    """The JSON object in ``path``; a ValueError naming the file and ``what`` it holds when it is
    missing, not JSON (a truncated or hand-edited file) or not an object."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the {what} is a JSON {type(value).__name__}, expected an object")
    return value


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a sibling temporary file and a rename: readers see the
    old or the new content, never a part. The file gets the umask's mode like any other file
    (``tempfile.mkstemp`` would leave it 0600)."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def unwritable_dir_reason(directory: str | os.PathLike) -> str | None:
    """Why nothing can be written in ``directory`` (or in its nearest existing parent, when it is
    still to be made), or None. It tries to create a file: permission bits alone say nothing for
    root, read-only mounts or ACLs."""
    probe_dir = Path(directory)
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        return f"{probe_dir} is not a directory"
    try:
        # an unnamed file where supported (O_TMPFILE): nothing to clean up, even after a crash
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as exc:
        return f"cannot write to {probe_dir} ({exc.strerror or exc})"
    return None


def try_lock_dir(directory: str | os.PathLike) -> int | None:
    """An exclusive ``flock`` on the directory itself: its open descriptor (close it to unlock),
    or None when another process holds it. The kernel drops the lock when its holder exits or is
    killed, so there is no stale lock file to clean up after a crash."""
    import fcntl

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
