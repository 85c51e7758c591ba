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
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
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
    python = base_python()
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
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)])
        built = next(wheels.glob("logplatform-*.whl"))
        # Every dependency as a wheel, at the versions the controller itself is tested with (pip, so the
        # machine's index configuration applies).
        _run(
            [
                *pip,
                "download",
                "--only-binary=:all:",
                "-c",
                str(REPO_ROOT / "requirements.txt"),
                "-d",
                str(wheels),
                str(built),
            ]
        )
        # The complete virtualenv, offline from those wheels: built here once, only unpacked on nodes.
        venv = work / "venv"
        uv = [_uv(), "--no-config", "--quiet"]
        _run([*uv, "venv", "--relocatable", "--python", python["executable"], str(venv)], cwd=work)
        _run(
            [
                *(*uv, "pip", "install", "--python", str(venv / "bin" / "python")),
                *("--offline", "--no-index", "--find-links", str(wheels)),
                *("--compile-bytecode", "--link-mode", "copy", f"logplatform=={version}"),
            ],
            cwd=work,
        )
        # A release that cannot import its own service is not a release.
        _run([str(venv / "bin" / "python"), "-c", "import logplatform.app, logplatform.__main__"])
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
            "name": "logplatform",
            "version": version,
            "wheel": built.name,
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
        # rename is atomic: the store never shows a half-built release
        staged.rename(target)
        os.sync()
    log.info("built release %s into %s", version, target)
    return target


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
        "--store", type=Path, default=DEFAULT_STORE, help="release store (default: .lab/releases)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the release exists")
    parser.add_argument("--list", action="store_true", help="list the releases in the store and exit")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        for version in list_releases(args.store):
            print(version)
        return 0
    if not args.version:
        print("bluegreen release: a version is required, e.g. `bluegreen release 1.2.0`", file=sys.stderr)
        return 2
    try:
        target = build(args.version, args.store, args.force)
    except ReleaseError as exc:
        print(f"bluegreen release: {exc}", file=sys.stderr)
        return 2
    print(f"release {args.version}: {target}")
    return 0
