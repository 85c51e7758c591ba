"""File helpers shared by bluegreen's modules."""

from __future__ import annotations

import os
import tempfile
from typing import Any

# The argument spec of a `dirs` list entry (bluegreen_release, bluegreen_files): made by make_dirs().
DIR_OPTIONS: dict[str, Any] = {
    "path": {"type": "str", "required": True},
    "mode": {"type": "raw"},
    "owner": {"type": "str"},
    "group": {"type": "str"},
}


def atomic_write(path: str, data: str, mode: int = 0o640) -> None:
    """Replace path with data so readers see the old or the new content, never a mix or a torn file.

    Write a temporary file beside it, fsync it, rename it over the target, then fsync the directory
    so the rename itself survives a crash.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def fsync_dir(path: str) -> None:
    """fsync a directory, so that a rename or a new entry in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        with open(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def make_dirs(module: Any, dirs: list[dict]) -> bool:
    """Each directory exists with its mode and owner (an AnsibleModule's `dirs` entries, DIR_OPTIONS); an
    entry with an empty path is skipped. True when anything changed (nothing is changed in check mode)."""
    changed = False
    for spec in dirs:
        if not spec["path"]:
            continue
        path = os.path.abspath(os.path.expanduser(spec["path"]))
        if not os.path.isdir(path):
            if os.path.lexists(path):
                module.fail_json(msg=f"{path} exists and is not a directory")
            changed = True
            if module.check_mode:
                continue
            os.makedirs(path, exist_ok=True)
        attributes = {"path": path, "mode": spec["mode"], "owner": spec.get("owner") or None}
        attributes.update(group=spec.get("group") or None, secontext=[None, None, None], attributes=None)
        changed = module.set_fs_attributes_if_different(attributes, changed)
    return changed
