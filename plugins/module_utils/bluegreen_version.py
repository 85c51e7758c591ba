"""The release version rule, in one place: the release builder, the playbooks (through the
`bluegreen_release_version` test plugin), our modules and the dashboard all check versions here.

A release version is x.y.z with an optional PEP 440 pre-release (1.2.0rc1): digits only, no leading
zeros, nothing before or after. The whole string must match (a trailing newline, a space or a path is
refused), because the version becomes part of file names, a wheel's metadata and commands.
"""

from __future__ import annotations

import re

VERSION_RULE = "x.y.z (digits, optional a/b/rcN suffix), e.g. 1.2.0"
_VERSION = re.compile(r"(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})(?:(a|b|rc)(0|[1-9]\d{0,3}))?")


class VersionError(ValueError):
    """A value is not a release version; the message names the value and the rule."""


def _parts(value: object) -> re.Match[str] | None:
    if not isinstance(value, str):
        return None
    # fullmatch, never `^...$`: `$` also matches before a final newline ("1.2.0\n")
    return _VERSION.fullmatch(value)


def is_version(value: object) -> bool:
    """True when value is a release version string."""
    return _parts(value) is not None


def check_version(value: object, name: str = "version") -> str:
    """value itself when it is a release version, else VersionError naming `name` and the value."""
    if _parts(value) is None:
        if value is None or value == "":
            raise VersionError(f"{name} is required: expected {VERSION_RULE}")
        shown = repr(value[:80]) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
        raise VersionError(f"{name} {shown} is not a release version: expected {VERSION_RULE}")
    return value  # type: ignore[return-value]


def version_key(version: str) -> tuple[int, int, int, tuple[str, int]]:
    """Sort key of a release version: numeric parts, and a final release after its pre-releases."""
    parts = _parts(version)
    if parts is None:
        raise VersionError(f"version {version!r} is not a release version: expected {VERSION_RULE}")
    major, minor, patch, pre_kind, pre_num = parts.groups()
    return int(major), int(minor), int(patch), (pre_kind or "z", int(pre_num or 0))
