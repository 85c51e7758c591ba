"""The dashboard's private files: its data folder is 0700 and every file in it 0600, whichever of the
dashboard and `python -m webui.users` creates them first. Run logs, users, password hashes and the
session key are not for other local users.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create path (and missing parents) as a private folder; an existing one is made private too."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create path empty, 0600, unless it exists; an existing one is made 0600 too."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    path.chmod(FILE_MODE)
    return path


def atomic_write_json(path: Path, data: dict, mode: int = FILE_MODE) -> None:
    """Replace path with data: temp file beside it, fsync, rename, fsync the directory. A missing folder
    is created private (an existing one is left as it is: it may be shared, e.g. /etc)."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
