"""Write-then-rename: the one way tricktune replaces a file another process may read.

A process killed mid-write (SIGKILL, a lost node, a full disk) leaves the previous file
whole, never a half-written checkpoint, state file or cache: the new content goes to a
temporary name in the same folder (so the rename cannot cross file systems) and
``os.replace`` swaps it in atomically on POSIX."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it inside the block, and it replaces ``path``
    when the block ends without an error (on an error the temporary file is removed).

    The name is ``.<name>.<pid>.part``: unique per process, so two writers never share it
    (the folder cache's build, holding its lock, deletes the ``*px.npy.*.part`` a killed build left)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
