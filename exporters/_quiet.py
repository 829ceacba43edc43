"""Silencing converters that print progress and C++ logs straight to file descriptors 1 and 2."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile


@contextlib.contextmanager
def captured_output():
    """Redirect fds 1 and 2 (C++ logs) and Python's sys.stdout/sys.stderr (which may not be fds, e.g. under
    a test runner) to a temporary sink; yields a callable returning what was captured."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    python_level = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)

        def read() -> str:
            sink.seek(0)
            return sink.read().decode(errors="replace") + python_level.getvalue()

        try:
            with contextlib.redirect_stdout(python_level), contextlib.redirect_stderr(python_level):
                yield read
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
