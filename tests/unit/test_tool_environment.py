"""`bluegreen release --package`: a tool's environment (supervisor's) built once on the controller into the
same artifact as a release, kept while the controller's interpreter is of the same kind."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from bluegreen import release

VERSION = "4.3.0"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return release.build_package("supervisor", VERSION, tmp_path_factory.mktemp("tools") / "supervisor")


def test_the_environment_runs_where_it_is_unpacked(built, tmp_path):
    manifest = json.loads((built / "manifest.json").read_text())
    assert (manifest["name"], manifest["version"], manifest["packages"]) == (
        "supervisor",
        VERSION,
        {"supervisor": VERSION},
    )
    assert manifest["python"] == release.base_python()
    with tarfile.open(built / manifest["artifact"]) as tar:
        tar.extractall(tmp_path, filter="tar")
    bin_dir = tmp_path / "venv" / "bin"
    out = subprocess.run([bin_dir / "supervisord", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == VERSION
    out = subprocess.run([bin_dir / "supervisorctl", "-h"], capture_output=True, text=True, check=True)
    assert "supervisorctl -- control applications run by supervisord" in out.stdout


def test_a_built_environment_is_kept(built):
    before = (built / "manifest.json").read_text(), (built / release.ARTIFACT).stat().st_ino
    assert release.build_package("supervisor", VERSION, built.parent) == built
    assert ((built / "manifest.json").read_text(), (built / release.ARTIFACT).stat().st_ino) == before


def test_one_built_on_another_kind_of_interpreter_is_rebuilt(built):
    manifest = json.loads((built / "manifest.json").read_text())
    stale = {**manifest, "python": {**manifest["python"], "soabi": "cpython-399-x86_64-linux-gnu"}}
    (built / "manifest.json").write_text(json.dumps(stale))
    release.build_package("supervisor", VERSION, built.parent)
    assert json.loads((built / "manifest.json").read_text())["python"] == release.base_python()


@pytest.mark.parametrize("name", ["logplatform", "../supervisor", "supervisor==4", ""])
def test_a_bad_package_name_is_refused_naming_it(name, tmp_path):
    with pytest.raises(release.ReleaseError, match="invalid package name"):
        release.build_package(name, VERSION, tmp_path)
    assert not list(tmp_path.iterdir())


def test_the_command_line_builds_into_the_store_it_is_given(tmp_path, capsys):
    from bluegreen.cli import main  # noqa: PLC0415

    store = tmp_path / "store"
    assert main(["release", "--package", "supervisor", VERSION, "--store", str(store)]) == 0
    assert capsys.readouterr().out.strip() == f"supervisor {VERSION}: {store / VERSION}"
    assert main(["release", "--package", "supervisor", "4.3.0\n", "--store", str(store)]) == 2
    assert "invalid release version" in capsys.readouterr().err


def test_a_relative_store_is_the_one_under_the_working_directory(tmp_path, monkeypatch, capsys):
    """`--store rel`: the build runs pip in a folder of its own, where a relative store named another
    place (`rel/.build-x/rel/.build-x/wheels`: pip failed)."""
    from bluegreen.cli import main  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    assert main(["release", "--package", "supervisor", VERSION, "--store", "rel"]) == 0
    assert capsys.readouterr().out.strip() == f"supervisor {VERSION}: {tmp_path / 'rel' / VERSION}"
    assert (tmp_path / "rel" / VERSION / "manifest.json").is_file()
