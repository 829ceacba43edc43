"""Publishing an output folder atomically: build in a sibling temp folder, rename at the end.

A failure or Ctrl-C removes the temp folder, so DIR is either the old one, the
complete new one, or absent; never half-written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from datamix_cli.errors import InputFileError, OutputDirError


class StagedFolder:
    """``with StagedFolder(target, force) as tmp: ...write into tmp...; publish()``."""

    def __init__(self, target: Path, force: bool = False):
        self.target = Path(target)
        if self.target.exists() and not force:
            raise OutputDirError(f"{self.target} already exists; pass --force to replace it")
        if self.target.exists() and not self.target.is_dir():
            raise OutputDirError(f"{self.target} exists and is not a folder")
        parent = self.target.resolve().parent
        if not parent.is_dir():
            raise OutputDirError(f"cannot write {self.target}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise OutputDirError(f"cannot write {self.target}: folder {parent} is not writable")
        self.staging: Path | None = None
        self.published = False

    def __enter__(self) -> "StagedFolder":
        try:
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.partial-", dir=self.target.resolve().parent))
        except OSError as exc:
            raise OutputDirError(f"cannot write next to {self.target}: {exc}") from exc
        return self

    def publish(self) -> Path:
        """Move the finished staging folder into place, replacing an old folder (with --force)."""
        backup = None
        if self.target.exists():
            backup = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            self.target.rename(backup)
        umask = os.umask(0)
        os.umask(umask)
        self.staging.chmod(0o777 & ~umask)  # mkdtemp made it private to us
        self.staging.rename(self.target)
        self.published = True
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        return self.target

    def __exit__(self, *exc_info) -> None:
        if not self.published and self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG via a temporary name, so a reader never sees half a file."""
    import matplotlib.pyplot as plt

    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        fig.savefig(partial, dpi=110, format="png")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputFileError(f"cannot write {path}: {exc}") from exc
    finally:
        plt.close(fig)


def write_atomically(path: Path, text: str, force: bool = False) -> None:
    """Write a text file via a temporary name; an existing file is refused without ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputDirError(f"{path} exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise OutputDirError(f"the folder of {path} does not exist")
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputFileError(f"cannot write {path}: {exc}") from exc
