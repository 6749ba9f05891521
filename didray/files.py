"""Cache directories written once, atomically: shared by pi_ref, GGUF conversions and datasets."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_once(final: Path, complete: Callable[[Path], bool],
               write: Callable[[Path], None]) -> bool:
    """Make `final` by `write(tmp)` unless `complete(final)`; returns whether it was written.

    Written into a temp dir beside it and moved with `os.replace`, so a crash never leaves a
    half-written entry that would later be mistaken for a finished one.
    """
    if complete(final):
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        write(tmp)
        if final.exists() and not complete(final):
            shutil.rmtree(final)  # a stale partial entry from an older, non-atomic writer
        try:
            os.replace(tmp, final)
        except OSError:
            if not complete(final):  # someone else finished first: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
