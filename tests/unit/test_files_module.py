"""bluegreen_files: directories and small files in one module run, each written only when it differs."""

from __future__ import annotations

import stat

from tests.ansible_modules import run_module


def write(tmp_path, check_mode=False, **overrides):
    args = {
        "dirs": [{"path": str(tmp_path / "lb"), "mode": "0750"}],
        "files": [
            {"path": str(tmp_path / "lb" / "live.map"), "content": "live blue\n", "force": False},
            {"path": str(tmp_path / "lb" / "idle.map"), "content": "blue green\ngreen blue\n"},
            {"path": str(tmp_path / "lb" / "shadow.lua"), "content": "-- lua\n", "mode": "0600"},
        ],
        **overrides,
    }
    return run_module("bluegreen_files", args, check_mode=check_mode)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_makes_the_dirs_and_writes_every_file_then_changes_nothing(tmp_path):
    failed, result = write(tmp_path)
    assert not failed, result
    lb = tmp_path / "lb"
    assert result["changed"] and result["written"] == [
        str(lb / n) for n in ("live.map", "idle.map", "shadow.lua")
    ]
    assert (lb / "idle.map").read_text() == "blue green\ngreen blue\n"
    assert (mode(lb), mode(lb / "live.map"), mode(lb / "shadow.lua")) == (0o750, 0o640, 0o600)
    failed, result = write(tmp_path)
    assert (failed, result["changed"], result["written"]) == (False, False, [])


def test_a_file_that_is_state_is_kept_and_one_that_differs_is_replaced(tmp_path):
    write(tmp_path)
    lb = tmp_path / "lb"
    (lb / "live.map").write_text("live green\n")  # the switch moved traffic: state, kept
    (lb / "idle.map").write_text("edited\n")
    (lb / "shadow.lua").chmod(0o644)
    failed, result = write(tmp_path)
    assert not failed, result
    assert result["written"] == [str(lb / "idle.map")]
    assert (lb / "live.map").read_text() == "live green\n"
    assert (lb / "idle.map").read_text() == "blue green\ngreen blue\n"
    assert mode(lb / "shadow.lua") == 0o600


def test_check_mode_writes_nothing_and_shows_the_diff(tmp_path):
    write(tmp_path)
    lb = tmp_path / "lb"
    (lb / "idle.map").write_text("edited\n")
    failed, result = write(tmp_path, check_mode=True, _ansible_diff=True)
    assert not failed, result
    assert result["changed"] and result["written"] == [str(lb / "idle.map")]
    assert result["diff"] == [
        {
            "before_header": str(lb / "idle.map"),
            "after_header": str(lb / "idle.map"),
            "before": "edited\n",
            "after": "blue green\ngreen blue\n",
        }
    ]
    assert (lb / "idle.map").read_text() == "edited\n"


def test_bad_input_is_refused_naming_it(tmp_path):
    (tmp_path / "lb").mkdir()
    failed, result = write(tmp_path, files=[{"path": str(tmp_path / "lb"), "content": "x"}])
    assert failed and f"{tmp_path / 'lb'} is a directory, not a file" in result["msg"]
    failed, result = write(
        tmp_path, files=[{"path": str(tmp_path / "lb" / "m"), "content": "x", "mode": "rw"}]
    )
    assert failed and "mode 'rw' is not an octal mode" in result["msg"]
    failed, result = write(
        tmp_path, dirs=[], files=[{"path": str(tmp_path / "nowhere" / "m"), "content": "x"}]
    )
    assert failed and f"{tmp_path / 'nowhere' / 'm'}: its directory does not exist" in result["msg"]
