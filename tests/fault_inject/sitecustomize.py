"""Test-only fault injection: Python imports this at start-up when its folder is on PYTHONPATH.

TEMPO_TEST_ENOSPC="<name part>:<n>" makes the n-th `write` to a file opened for writing whose
name contains <name part> write half of its bytes and then fail with OSError(ENOSPC), once:
a disk that fills up in the middle of a write and has room again a moment later.
"""

from __future__ import annotations

import builtins
import errno
import os

_SPEC = os.environ.get("TEMPO_TEST_ENOSPC")

if _SPEC:
    _PART, _, _NTH = _SPEC.rpartition(":")
    _STATE = {"writes": 0, "failed": False}
    _real_open = builtins.open

    class _FillingUp:
        """A file object whose n-th write runs out of space."""

        def __init__(self, fh):
            self._fh = fh

        def write(self, data):
            if not _STATE["failed"]:
                _STATE["writes"] += 1
                if _STATE["writes"] == int(_NTH):
                    _STATE["failed"] = True
                    self._fh.write(data[: len(data) // 2])
                    self._fh.flush()
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._fh.write(data)

        def __getattr__(self, name):
            return getattr(self._fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

    def _open(file, mode="r", *args, **kwargs):
        fh = _real_open(file, mode, *args, **kwargs)
        name = os.path.basename(os.fsdecode(file)) if not isinstance(file, int) else ""
        if any(flag in mode for flag in "wax+") and _PART in name:
            return _FillingUp(fh)
        return fh

    builtins.open = _open
