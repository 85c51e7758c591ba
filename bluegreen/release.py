"""Build logplatform release x.y.z into the release store, ready for offline install on any host.

A release is `<store>/<version>/bundle.tar` (the logplatform wheel at that version plus every wheel it
depends on, pinned to the controller's requirements.txt) and `<store>/<version>/manifest.json`
(version, file checksums, source commit). The logplatform role copies the bundle to each host and
installs it there without network access.
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


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        command = " ".join(argv[:4])
        raise ReleaseError(f"{command} ... failed (exit {result.returncode}):\n{result.stderr[-3000:]}")


def build(version: str, store: Path = DEFAULT_STORE, force: bool = False) -> Path:
    """Build the release and return its directory. Idempotent: an existing release is kept."""
    target = release_dir(store, version)
    if (target / "manifest.json").exists() and not force:
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
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)])
        built = next(wheels.glob("logplatform-*.whl"))
        # Every dependency as a wheel, at the versions the controller itself is tested with.
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
        bundle = work / "bundle.tar"
        with tarfile.open(bundle, "w") as tar:
            for wheel in sorted(wheels.iterdir()):
                tar.add(wheel, arcname=wheel.name)
        manifest = {
            "name": "logplatform",
            "version": version,
            "wheel": built.name,
            "built_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source_commit": _source_commit(),
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "bundle_sha256": _sha256(bundle),
            "files": {w.name: _sha256(w) for w in sorted(wheels.iterdir())},
        }
        staged = work / "release"
        staged.mkdir()
        shutil.move(str(bundle), staged / "bundle.tar")
        (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        # rename is atomic: the store never shows a half-built release
        staged.rename(target)
        os.sync()
    log.info("built release %s into %s", version, target)
    return target


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
