"""Nodes join and leave a color's backend through HAProxy's runtime API, under live load: no reload,
nothing failed, nothing lost (issue 15, point 7)."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.conftest import LAB
from tests.integration.lab import (
    HAPROXY_DIR,
    Loadgen,
    haproxy_live,
    haproxy_processes,
    run_playbook,
    server_rows,
    state,
)

MORE_GREEN = {"green-3": 9203, "green-4": 9204}


@pytest.fixture
def more_green(lab, tmp_path):
    """An inventory that gives green two more nodes (read together with inventories/local); the extra
    nodes are stopped and their directories removed at the end (once out of the inventory, nothing
    manages their processes)."""
    path = tmp_path / "more-green.yml"
    hosts = {name: {"logplatform_listen_port": port} for name, port in MORE_GREEN.items()}
    green = {"green": {"hosts": hosts}}
    path.write_text(yaml.safe_dump({"all": {"children": {"logplatform": {"children": green}}}}))
    yield path
    run_playbook(
        "teardown.yml",
        *("-i", "inventories/local", "-i", str(path), "--limit", ",".join(MORE_GREEN)),
        *("-e", "bluegreen_purge=true"),
    )


def configured_servers(color: str) -> list[str]:
    """Server names of a color's backend in the rendered haproxy.cfg (what the next restart loads)."""
    names, inside = [], False
    for line in (HAPROXY_DIR / "haproxy.cfg").read_text().splitlines():
        if line and not line[0].isspace():
            inside = line.split() == ["backend", f"bg_{color}"]
        elif inside and line.split()[:1] == ["server"]:
            names.append(line.split()[1])
    return names


def requests_to(color: str, names: list[str]) -> dict[str, int]:
    rows = server_rows(color)
    return {name: int(rows[name]["stot"]) for name in names}


def test_green_grows_to_four_nodes_and_shrinks_back_under_load_without_a_reload(more_green, tmp_path):
    first_live = state()["live"]
    if first_live != "green":
        run = run_playbook("switch.yml", "-e", "bluegreen_color=green")
        assert run.returncode == 0, run.tail()
    assert haproxy_live() == "green"
    before = haproxy_processes()
    # 50 batches/s: starting two nodes (unpacking their release) slows the live ones on a shared 2-core
    # machine; the generator counts more than 512 unanswered requests as failures (client-backpressure)
    load = Loadgen(tmp_path / "load", rate=50)
    try:
        time.sleep(2)
        grow = run_playbook("site.yml", "-i", "inventories/local", "-i", str(more_green))
        assert grow.returncode == 0, grow.tail(4000)
        assert grow.stats["lb-1"]["changed"] > 0, grow.stats
        assert configured_servers("green") == ["green-1", "green-2", "green-3", "green-4"]
        rows = server_rows("green")
        assert {name: rows[name]["status"] for name in rows} == dict.fromkeys(
            ("green-1", "green-2", "green-3", "green-4"), "UP"
        )
        # the new nodes take live traffic now
        served = requests_to("green", list(MORE_GREEN))
        time.sleep(2)
        after = requests_to("green", list(MORE_GREEN))
        assert all(after[name] > served[name] for name in MORE_GREEN), (served, after)

        again = run_playbook("site.yml", "-i", "inventories/local", "-i", str(more_green))
        assert again.returncode == 0, again.tail(4000)
        assert all(host["changed"] == 0 for host in again.stats.values()), again.stats

        shrink = run_playbook("site.yml")
        assert shrink.returncode == 0, shrink.tail(4000)
        assert shrink.stats["lb-1"]["changed"] > 0, shrink.stats
        assert configured_servers("green") == ["green-1", "green-2"]
        assert set(server_rows("green")) == {"green-1", "green-2"}
        time.sleep(2)
    finally:
        load.stop()
    after = haproxy_processes()
    report = load.verify()
    print(f"HAProxy before {before}, after {after}; {report['acked_entries']} entries acked, "
          f"{report['failed_requests_total']} requests failed, {report['lost']} lost")  # fmt: skip
    assert after == before  # the same master, no reload, the same workers
    assert report["acked_entries"] > 2000
    assert report["failed_requests_total"] == 0, report["failed_requests"]
    assert report["lost"] == 0, report["lost_sample"]
    assert report["duplicates"] == 0
    assert set(MORE_GREEN) <= set(report["by_node"]), report["by_node"]
    assert any(LAB.glob("nodes/green-3/sink/*.ndjson"))
    if first_live != "green":
        run = run_playbook("switch.yml", "-e", f"bluegreen_color={first_live}")
        assert run.returncode == 0, run.tail()


def test_a_deploy_refuses_nodes_haproxy_does_not_hold_and_names_them(more_green):
    """An inventory grown without site.yml: the deploy would provision the new nodes and switch to a
    color whose backend lacks them; it is refused in preflight, naming them and the fix."""
    run = run_playbook(
        "deploy.yml", "-i", "inventories/local", "-i", str(more_green), "-e", "bluegreen_version=1.0.0"
    )
    assert run.returncode != 0
    assert run.failure["stage"] == "preflight", run.failure
    assert "green-3" in run.failure["observed"] and "green-4" in run.failure["observed"]
    assert "site.yml" in run.failure["observed"]
    stages = [event["stage"] for event in run.of_type("stage_start")]
    assert "provision" not in stages, stages  # nothing was installed on the new nodes
