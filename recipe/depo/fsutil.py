"""Publishing a fully written directory so readers see the old one or the new one, never a mix;
reading back the JSON inside one with errors that name the file."""

from __future__ import annotations

import json
import os
import shutil
import uuid


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
