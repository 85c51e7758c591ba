"""The release version rule (plugins/module_utils/bluegreen_version.py) and the places that apply it:
`bluegreen release`, and the playbooks' `bluegreen_release_version` test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from ansible.module_utils.bluegreen_version import VersionError, check_version, is_version, version_key

from tests.conftest import REPO, VENV_BIN, run_playbook

GOOD = ["0.0.0", "1.2.0", "10.20.30", "1.2.0a1", "1.2.0b0", "1.2.0rc12"]
# A trailing newline passes a `^...$` search: `$` matches before a final "\n".
BAD = ["9.9.9\n", "1.2.0\r\n", " 1.2.0", "1.2.0 ", "\n1.2.0", "1.2", "01.2.0", "1.2.0rc", "../x", "1;rm /"]


@pytest.mark.parametrize("value", GOOD)
def test_release_versions_pass(value):
    assert is_version(value)
    assert check_version(value) == value


@pytest.mark.parametrize("value", [*BAD, 1.2, None, "", ["1.2.0"]])
def test_anything_else_is_refused_naming_the_value(value):
    assert not is_version(value)
    with pytest.raises(VersionError) as refused:
        check_version(value, "bluegreen_version")
    message = str(refused.value)
    assert message.startswith("bluegreen_version ")
    assert "x.y.z" in message
    if value:
        assert repr(value) in message


def test_final_releases_sort_after_their_pre_releases():
    versions = ["1.10.0", "1.2.0", "1.2.0rc1", "1.2.0a2", "1.2.0b1", "0.9.9"]
    assert sorted(versions, key=version_key) == ["0.9.9", "1.2.0a2", "1.2.0b1", "1.2.0rc1", "1.2.0", "1.10.0"]


@pytest.mark.parametrize("value", ["9.9.9\n", "1.2.0 ", "../1.2.0"])
def test_release_command_refuses_a_bad_version_before_building(tmp_path, value):
    store = tmp_path / "store"
    run = subprocess.run(
        [str(VENV_BIN / "bluegreen"), "release", value, "--store", str(store)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"invalid release version {value!r}" in run.stderr
    assert "metadata-generation-failed" not in run.stderr
    assert not store.exists() or not any(store.iterdir())


def test_playbooks_test_plugin_applies_the_same_rule(tmp_path):
    """`x is bluegreen_release_version` in a playbook run with the project's ansible.cfg."""
    playbook = tmp_path / "check.yml"
    playbook.write_text(
        "- name: Check versions\n"
        "  hosts: localhost\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Write the versions that pass\n"
        "      ansible.builtin.copy:\n"
        "        content: \"{{ candidates | select('bluegreen_release_version') | list | to_json }}\"\n"
        '        dest: "{{ out }}"\n'
        "        mode: '0600'\n"
    )
    out = tmp_path / "passed.json"
    run = run_playbook(
        playbook,
        *("-i", "localhost,", "-c", "local"),
        *("-e", f"ansible_python_interpreter={sys.executable}"),
        *("-e", json.dumps({"candidates": [*GOOD, *BAD, ""], "out": str(out)})),
        timeout=120,
    )
    assert run.returncode == 0, run.tail()
    assert json.loads(out.read_text()) == GOOD
