"""molecule: one scenario per infrastructure role (molecule/<role>/, shared settings in
.config/molecule/config.yml), each a test here: `molecule test -s <role>` brings up an SSH lab of the
scenario's hosts (bluegreen/sshlab.py), converges the role, converges it again and fails on any change
(idempotence), verifies what the role promises with pytest-testinfra over SSH, and brings the lab down.
A lab test: under pytest-xdist, as root, it runs in the worker's own network namespace (the lab's bridge
and addresses exist only there); the scenarios of a worker run one after another (one lab at a time)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen import sshlab
from tests.conftest import LAB, REPO, VENV_BIN
from tests.integration.conftest import enter_private_lab
from tests.integration.lab import fill_controller_caches
from tests.integration.sshlab import skip_unless_possible
from tests.lab_namespace import entered

SCENARIOS = sorted(path.parent.name for path in (REPO / "molecule").glob("*/molecule.yml"))
SCENARIO_SECONDS = 900
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def controller_ready(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Root, namespaces, the worker's own lab network, and what converge needs on the controller (the
    release store, supervisor's environment) built beforehand, outside it (pip needs the network)."""
    skip_unless_possible()
    enter_private_lab(tmp_path_factory)
    if not entered():
        fill_controller_caches()


def test_every_infrastructure_role_has_a_scenario() -> None:
    roles = {path.parent.parent.name for path in (REPO / "roles").glob("*/meta/argument_specs.yml")}
    assert set(SCENARIOS) == roles - {"bluegreen"}, (
        "roles/bluegreen is the controller's, run by the playbooks"
    )


@pytest.fixture
def scenario_lab(scenario: str) -> Iterator[Path]:
    """The scenarios' lab folder (.config/molecule/config.yml); at the end, whatever a failed or killed
    run left up is brought down."""
    root = LAB / "mol"
    yield root
    sshlab.Lab(root).down()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, scenario_lab: Path, controller_ready: None) -> None:
    environment = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "NO_COLOR": "1",
        # molecule's state, inventory and ansible.cfg in the worker's own .lab/ (not in ~/.ansible/tmp,
        # which every worker and a `make molecule` beside them would share)
        "MOLECULE_EPHEMERAL_DIRECTORY": str(LAB / "molecule" / scenario),
    }
    molecule = subprocess.Popen(
        [str(VENV_BIN / "molecule"), "test", "-s", scenario],
        cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = molecule.communicate(timeout=SCENARIO_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(molecule.pid, signal.SIGKILL)  # molecule and the ansible-playbook it runs
        output, _ = molecule.communicate()
        pytest.fail(
            f"molecule test -s {scenario} took over {SCENARIO_SECONDS} s:\n{ANSI.sub('', output)[-12000:]}"
        )
    output = ANSI.sub("", output)
    assert molecule.returncode == 0, f"molecule test -s {scenario} failed:\n{output[-12000:]}"
    # every step ran (a step molecule skips, a verifier that finds no test, still exits 0)
    for step in ("converge", "idempotence", "verify"):
        assert re.search(rf"{scenario} \S+ {step}: Executed: Successful", output), f"no {step}:\n{output}"
    assert re.search(r"=+ \d+ passed in ", output), f"testinfra ran no test:\n{output[-6000:]}"
    # destroy brought the lab down: no bridge, no host left
    assert sshlab.bridge_owner() is None, output[-3000:]
    assert not (scenario_lab / "hosts").exists(), output[-3000:]
