"""Build logplatform release x.y.z ONCE, on the controller, into an artifact a node only unpacks and starts.

A release is `<store>/<version>/release.tar.gz` and `<store>/<version>/manifest.json`:

- `release.tar.gz` holds `venv/`, a complete relocatable virtualenv (`uv venv --relocatable`: entry
  points find their interpreter relative to themselves, so the tree works wherever it is unpacked) with
  the logplatform wheel at that version and every dependency, pinned to the controller's
  requirements.txt, installed offline from their wheels by `uv pip install`, bytecode compiled.
- `manifest.json` (format 2): name, version, wheel, packages {name: version}, built_at, source_commit,
  the artifact's file name and sha256, and `python`: the interpreter the virtualenv was built on
  (executable, version, implementation, cache_tag, soabi, platform).

What the artifact assumes of a node: the same CPython minor version, ABI and platform (the compiled
dependencies: aiohttp, orjson, uvloop ...); the interpreter may live at another path on the node
(`logplatform_python`). The `bluegreen_release` module checks that on the node before unpacking and
refuses a mismatch naming both sides. The node needs nothing else: no pip, no network, no uv.

`bluegreen release --package supervisor 4.3.0` builds the environment of a tool the hosts run beside the
releases the same way, from the package index, into `.lab/tools/supervisor/4.3.0/` (same artifact, same
manifest, unpacked by the same module); it is kept while it was built on an interpreter of the
controller's kind, so every site run after the first reuses it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

from ansible.module_utils.bluegreen_version import VERSION_RULE, is_version, version_key

log = logging.getLogger("bluegreen.release")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORE = REPO_ROOT / ".lab" / "releases"
# environments of the tools the hosts run beside the releases (supervisor): <tools>/<name>/<version>/
DEFAULT_TOOLS = REPO_ROOT / ".lab" / "tools"
SOURCE_DIR = REPO_ROOT / "logplatform"


class ReleaseError(Exception):
    """A release cannot be built; the message says why."""


def check_version(version: str) -> str:
    """The version itself when it is a release version (the one rule, module_utils/bluegreen_version.py):
    anything else (paths, shell text, a trailing newline) is refused before it can become part of a file
    name, a wheel's metadata or a command."""
    if not is_version(version):
        raise ReleaseError(f"invalid release version {version!r}: expected {VERSION_RULE}")
    return version


def release_dir(store: Path, version: str) -> Path:
    return store / check_version(version)


def list_releases(store: Path = DEFAULT_STORE) -> list[str]:
    """Versions present in the store (those with a manifest), oldest first."""
    if not store.is_dir():
        return []
    found = [p.parent.name for p in store.glob("*/manifest.json") if is_version(p.parent.name)]
    return sorted(found, key=version_key)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


ARTIFACT = "release.tar.gz"
MANIFEST_FORMAT = 2
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
# a distribution name as PyPI spells one (PEP 508's rule)
PACKAGE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
# What must match for an artifact to run on an interpreter (the bluegreen_release module checks the same)
PYTHON_MUST_MATCH = ("implementation", "cache_tag", "soabi", "platform")


def _run(argv: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    if result.returncode != 0:
        command = " ".join(argv[:4])
        raise ReleaseError(f"{command} ... failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def _uv() -> str:
    try:
        from uv import find_uv_bin  # noqa: PLC0415 - only a build needs it
    except ImportError as exc:
        raise ReleaseError("uv is not installed in the controller's environment: run `make setup`") from exc
    return find_uv_bin()


def base_python() -> dict[str, str]:
    """The interpreter the release's virtualenv is built on (this one's base, not the controller's venv)."""
    return {
        "executable": str(Path(sys._base_executable).resolve()),
        "version": ".".join(map(str, sys.version_info[:3])),
        "implementation": sys.implementation.name,
        "cache_tag": sys.implementation.cache_tag,
        "soabi": sysconfig.get_config_var("SOABI") or "",
        "platform": sysconfig.get_platform(),
    }


def build(version: str, store: Path = DEFAULT_STORE, force: bool = False) -> Path:
    """Build the release and return its directory. Idempotent: an existing release is kept."""
    target = release_dir(store, version)
    if not force and _manifest_format(target) >= MANIFEST_FORMAT:
        log.info("release %s already in %s", version, store)
        return target
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".build-{version}-", dir=store) as tmp:
        work = Path(tmp)
        source = work / "src"
        shutil.copytree(
            SOURCE_DIR,
            source,
            ignore=shutil.ignore_patterns("tests", "*.egg-info", "__pycache__", "build", "dist"),
        )
        (source / "src" / "logplatform" / "_version.py").write_text(
            f'# Written by `bluegreen release`.\n__version__ = "{version}"\n'
        )
        wheels = work / "wheels"
        _run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)])
        built = next(wheels.glob("logplatform-*.whl"))
        # Every dependency as a wheel, at the versions the controller itself is tested with (pip, so the
        # machine's index configuration applies).
        _run(
            [
                *PIP,
                "download",
                "--only-binary=:all:",
                "-c",
                str(REPO_ROOT / "requirements.txt"),
                "-d",
                str(wheels),
                str(built),
            ]
        )
        # A release that cannot import its own service is not a release.
        _store_venv(
            work,
            wheels,
            "logplatform",
            version,
            imports=["logplatform.app", "logplatform.__main__"],
            target=target,
            wheel=built.name,
        )
    log.info("built release %s into %s", version, target)
    return target


def build_package(name: str, version: str, store: Path, force: bool = False) -> Path:
    """Build the environment of a package from the index (a tool the hosts run beside the releases, such
    as supervisor) once, into `<store>/<version>/`: the same artifact and manifest as a release, so a host
    only unpacks it (module bluegreen_release). Kept while its manifest is current and was built on an
    interpreter of this one's kind (implementation, cache tag, SOABI, platform); rebuilt otherwise."""
    if not PACKAGE_NAME.fullmatch(name) or name == "logplatform":
        raise ReleaseError(f"invalid package name {name!r}: expected a PyPI name other than logplatform")
    target = release_dir(store, version)
    if not force and _reusable(target, name):
        log.info("%s %s already in %s", name, version, store)
        return target
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".build-{version}-", dir=store) as tmp:
        work = Path(tmp)
        wheels = work / "wheels"
        _run([*PIP, "download", "--only-binary=:all:", "-d", str(wheels), f"{name}=={version}"])
        _store_venv(work, wheels, name, version, imports=[name.replace("-", "_")], target=target)
    log.info("built %s %s into %s", name, version, target)
    return target


def _store_venv(
    work: Path, wheels: Path, name: str, version: str, *, imports: list[str], target: Path, **extra: str
) -> None:
    """The complete virtualenv of `name==version`, offline from `wheels`, import-checked, packed into
    `target` (release.tar.gz + manifest.json) by one rename: the store never shows half an artifact."""
    python = base_python()
    venv = work / "venv"
    uv = [_uv(), "--no-config", "--quiet"]
    _run([*uv, "venv", "--relocatable", "--python", python["executable"], str(venv)], cwd=work)
    _run(
        [
            *(*uv, "pip", "install", "--python", str(venv / "bin" / "python")),
            *("--offline", "--no-index", "--find-links", str(wheels)),
            *("--compile-bytecode", "--link-mode", "copy", f"{name}=={version}"),
        ],
        cwd=work,
    )
    _run([str(venv / "bin" / "python"), "-c", f"import {', '.join(imports)}"])
    packages = json.loads(
        _run([*uv, "pip", "list", "--python", str(venv / "bin" / "python"), "--format", "json"], cwd=work)
    )
    staged = work / "release"
    staged.mkdir()
    artifact = staged / ARTIFACT
    # members sorted, mtimes kept (the compiled bytecode is checked against them)
    with tarfile.open(artifact, "w:gz", compresslevel=6) as tar:
        tar.add(venv, arcname="venv", filter=_owned_by_root, recursive=True)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        **extra,
        "packages": {p["name"]: p["version"] for p in packages},
        "built_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_commit": _source_commit(),
        "python": python,
        "artifact": ARTIFACT,
        "artifact_sha256": _sha256(artifact),
        "artifact_bytes": artifact.stat().st_size,
    }
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    # rename is atomic: the store never shows a half-built artifact
    staged.rename(target)
    os.sync()


def _reusable(target: Path, name: str) -> bool:
    """The stored artifact is of this format and package, built on an interpreter of this one's kind."""
    try:
        manifest = json.loads((target / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return False
    if manifest.get("name") != name or not (target / ARTIFACT).is_file():
        return False
    built, here = manifest.get("python") or {}, base_python()
    return all(built.get(key) == here[key] for key in PYTHON_MUST_MATCH)


def _manifest_format(target: Path) -> int:
    """The format of the release's manifest: 0 when there is none (an older store's bundle is format 1,
    which nodes no longer install, so it is rebuilt)."""
    try:
        return int(json.loads((target / "manifest.json").read_text()).get("format", 1))
    except (OSError, ValueError, AttributeError):
        return 0


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Members carry no builder's user: the node's unpacking user owns what it unpacks."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", nargs="?", help="release version, x.y.z")
    parser.add_argument(
        "--store",
        type=Path,
        help="release store (default: .lab/releases; with --package NAME: .lab/tools/NAME)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the release exists")
    parser.add_argument("--list", action="store_true", help="list the releases in the store and exit")
    parser.add_argument(
        "--package",
        metavar="NAME",
        help="build the environment of package NAME at VERSION from the package index instead of a "
        "logplatform release (a tool the hosts run, e.g. supervisor), the same kind of artifact",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # absolute: the build runs pip in another directory, where a relative store would name another place
    store = (args.store or (DEFAULT_TOOLS / args.package if args.package else DEFAULT_STORE)).resolve()
    if args.list:
        for version in list_releases(store):
            print(version)
        return 0
    if not args.version:
        print("bluegreen release: a version is required, e.g. `bluegreen release 1.2.0`", file=sys.stderr)
        return 2
    try:
        if args.package:
            target = build_package(args.package, args.version, store, args.force)
        else:
            target = build(args.version, store, args.force)
    except ReleaseError as exc:
        print(f"bluegreen release: {exc}", file=sys.stderr)
        return 2
    print(f"{args.package or 'release'} {args.version}: {target}")
    return 0
