"""Files replaced whole: a reader, or a run resumed after a kill, sees the old file or the new one,
never half of one.

The one home of write-then-rename: the new content goes to a temporary file beside the target (same
folder, so the rename cannot cross file systems), is flushed to disk, renamed over the target with
``os.replace``, and the folder's entry is flushed too, so a power cut after the rename keeps it.
``replacing_folder`` does the same for a folder built in one go (a store, an unpacked download).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class Replacement:
    """The temporary file that will replace ``target``: write to ``path``, by name or by handle.

    ``commit`` puts it in place, ``discard`` drops it; ``replacing`` calls one of them on leaving
    its block unless the caller already did (a caller that must rename under a lock of its own
    commits inside that lock).
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = _created_beside(target, _new_file)
        self.done = False

    def commit(self) -> None:
        """Flush the new content to disk and rename it over the target."""
        sync(self.path)
        os.replace(self.path, self.target)
        self.done = True
        sync(self.target.parent)

    def discard(self) -> None:
        """Remove the temporary file; the target stays as it was."""
        self.path.unlink(missing_ok=True)
        self.done = True


@contextmanager
def replacing(target: str | Path) -> Iterator[Replacement]:
    """A temporary file beside ``target``, renamed over it when the block ends without an error
    and removed when it raises (also on KeyboardInterrupt), leaving the old file untouched."""
    replacement = Replacement(Path(target))
    try:
        yield replacement
    except BaseException:
        replacement.discard()
        raise
    if not replacement.done:
        try:
            replacement.commit()
        except BaseException:
            replacement.discard()
            raise


@contextmanager
def replacing_folder(target: str | Path) -> Iterator[Path]:
    """A new, empty folder beside ``target`` to fill, renamed to ``target`` when the block ends
    without an error and removed when it raises. No rename swaps a folder for a full one: an
    existing ``target`` must be removed (by the caller, who knows it holds nothing to keep) before
    the block ends."""
    target = Path(target)
    scratch = _created_beside(target, os.mkdir)
    try:
        yield scratch
        os.replace(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    sync(target.parent)


def sync(path: str | Path) -> None:
    """Flush a file's content, or a folder's entries, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _created_beside(target: Path, create: Callable[[Path], None]) -> Path:
    """A new entry made by ``create`` in the target's folder, hidden, named after the target and
    ending in the target's suffix (``np.save`` and Keras add or require one). It gets the usual
    permissions (unlike ``mkstemp``'s owner-only ones), since it becomes the target."""
    while True:
        candidate = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.partial{target.suffix}")
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate


def _new_file(path: Path) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
