"""`bluegreen verify` on real loadgen runs against real sink files, then on damaged copies of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from bluegreen import verify as verify_mod
from bluegreen.cli import main
from bluegreen.loadgen import LoadgenConfig, run_loadgen
from bluegreen.verify import VerifyInputError, verify
from tests.unit.sinkserver import running_server


def edit_sink(sink: Path, edit) -> None:
    """Rewrite every sink file: `edit(lines)` returns the new list of lines (bytes, with newline)."""
    for f in sorted(sink.glob("*.ndjson")):
        f.write_bytes(b"".join(edit(f.read_bytes().splitlines(keepends=True))))


def line_id(line: bytes) -> str:
    return orjson.loads(line)["id"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two clean runs: one through a blue node, one through a green node, sharing a sink folder."""
    base = tmp_path_factory.mktemp("runs")
    sink = base / "sink"
    with (
        running_server(sink, node="blue-1", color="blue") as blue,
        running_server(sink, "--version", "2.0.0", node="green-1", color="green") as green,
    ):
        for name, srv in (("vb", blue), ("vg", green)):
            run_loadgen(
                LoadgenConfig(
                    out=base / name, urls=[srv.url], rate=200, batch=5, duration=0.3, run_id=name, quiet=True
                )
            )
    return base


@pytest.fixture
def copy(runs, tmp_path):
    """A private copy of the runs and their sink, to damage."""
    dst = tmp_path / "copy"
    shutil.copytree(runs, dst)
    return dst


def test_clean_runs_pass_with_counts_by_color_version_and_node(runs, capsys):
    report = verify([runs / "vb", runs / "vg"], [str(runs / "sink" / "*.ndjson")])
    assert report["verdict"] == "PASS" and report["ok"]
    assert (report["requests"], report["sent_entries"], report["acked_entries"]) == (120, 600, 600)
    assert report["lost"] == report["duplicates"] == report["failed_requests_total"] == 0
    assert report["found_not_acked_total"] == 0
    assert report["by_color"] == {"blue": 300, "green": 300}
    assert report["by_version"] == {"1.0.0": 300, "2.0.0": 300}
    assert report["by_node"] == {"blue-1": 300, "green-1": 300}
    assert [(r["run_id"], r["by_color"]) for r in report["runs"]] == [
        ("vb", {"blue": 300}),
        ("vg", {"green": 300}),
    ]
    assert report["sinks"]["invalid_lines"] == 0 and len(report["sinks"]["files"]) == 2

    assert (
        main(["verify", "--run", str(runs / "vb"), "--run", str(runs / "vg"), "--sinks", str(runs / "sink")])
        == 0
    )
    out = capsys.readouterr().out
    assert "PASS" in out and "by color" in out and "green 300" in out


def test_deleted_acked_lines_are_reported_lost_and_exit_1(copy, tmp_path, capsys):
    gone = {"vb-7", "vb-123", "vb-299"}
    edit_sink(copy / "sink", lambda lines: [ln for ln in lines if line_id(ln) not in gone])

    report_file = tmp_path / "report.json"
    argv = ["verify", "--run", str(copy / "vb"), "--sinks", str(copy / "sink" / "*.ndjson")]
    assert main([*argv, "--json", "--report", str(report_file)]) == 1
    printed = orjson.loads(capsys.readouterr().out)
    written = orjson.loads(report_file.read_bytes())
    for report in (printed, written):
        assert report["verdict"] == "FAIL"
        assert report["lost"] == 3
        assert report["lost_sample"] == ["vb-7", "vb-123", "vb-299"]
        assert report["acked_entries"] == 300
        assert report["failed_requests_total"] == 0
        assert "3 acked entries are in no sink" in report["reasons"]

    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "vb-7 vb-123 vb-299" in out and "FAIL" in out


def test_duplicates_are_counted_and_reported_not_hidden(copy, capsys):
    def dup(lines):
        extra = [ln for ln in lines if line_id(ln) in {"vg-10", "vg-11"}]
        return lines + extra + extra[:1]  # vg-10 three times, vg-11 twice

    edit_sink(copy / "sink", dup)
    report = verify([copy / "vg"], [str(copy / "sink")])
    assert report["duplicates"] == 2
    assert report["duplicate_extra_lines"] == 3
    assert report["duplicate_sample"] == ["vg-10", "vg-11"]
    assert report["lost"] == 0
    assert report["by_color"] == {"green": 303}  # lines, duplicates included
    assert report["verdict"] == "PASS"  # duplicates are reported; the verdict is about loss and failures
    assert main(["verify", "--run", str(copy / "vg"), "--sinks", str(copy / "sink")]) == 0
    assert "2 ids  (3 extra lines)" in capsys.readouterr().out


def test_failed_requests_and_entries_written_despite_failure(tmp_path):
    sink = tmp_path / "sink"
    with running_server(sink, "--fail-every", "4", "--write-then-fail-every", "5") as srv:
        run_loadgen(
            LoadgenConfig(out=tmp_path / "r", urls=[srv.url], rate=100, batch=3, duration=0.4, quiet=True)
        )
        stats = srv.stats()
    assert stats["requests"] == 40 and stats["failed"] == 10 and stats["lied"] == 6  # 5,10,15,25,30,35

    report = verify([tmp_path / "r"], [str(sink)])
    assert report["verdict"] == "FAIL"
    assert report["lost"] == 0
    assert report["failed_requests"] == {
        "http-500": {"requests": 6, "entries": 18, "found": 18, "fully_written": 6, "partially_written": 0},
        "http-503": {"requests": 10, "entries": 30, "found": 0, "fully_written": 0, "partially_written": 0},
    }
    assert report["failed_requests_total"] == 16
    assert report["found_not_acked"] == {"http-500": 18}  # in the sink but not acked: reported, not loss
    assert report["acked_entries"] == 3 * stats["ok"] == 72
    assert report["sink_lines"] == 72 + 18


def test_torn_and_invalid_sink_lines_are_counted(copy, capsys):
    f = sorted((copy / "sink").glob("blue-*.ndjson"))[0]
    with f.open("ab") as fh:
        fh.write(b'{"id": "vb-9999", "mess')  # a write cut short: no newline
    report = verify([copy / "vb"], [str(copy / "sink" / "*.ndjson")])
    assert report["sinks"]["invalid_lines"] == 1
    assert report["sinks"]["invalid_sample"][0]["torn_tail"] is True
    assert report["sinks"]["invalid_sample"][0]["file"] == str(f.resolve())
    assert report["verdict"] == "PASS"
    assert main(["verify", "--run", str(copy / "vb"), "--sinks", str(copy / "sink")]) == 0
    assert "1 not valid JSON" in capsys.readouterr().out


def test_run_of_a_killed_loadgen_is_incomplete_and_unrecorded_entries_are_counted(copy):
    run = copy / "vb"
    (run / "summary.json").unlink()
    recs = run / "requests.ndjson"
    lines = recs.read_bytes().splitlines(keepends=True)
    by_seq = {orjson.loads(ln)["seq"]: ln for ln in lines}
    drop = {by_seq[50], by_seq[55], by_seq[295]}  # two interior batches and the last one
    recs.write_bytes(b"".join(ln for ln in lines if ln not in drop) + b'{"seq": 300, "cou')  # torn tail

    report = verify([run], [str(copy / "sink")])
    r = report["runs"][0]
    assert r["complete"] is False
    assert r["request_lines_invalid"] == 1
    assert r["failed_requests"] == {
        "unrecorded": {"requests": 1, "entries": 10, "found": 10, "fully_written": 1, "partially_written": 0}
    }
    assert r["found_not_acked"] == {"unrecorded": 15}  # seq 50-59 and, past the last record, 295-299
    assert r["lost"] == 0
    assert r["acked_entries"] == 285
    assert report["verdict"] == "FAIL"
    assert any("no summary.json" in reason for reason in report["reasons"])


def test_bad_input_exits_2_naming_the_problem(copy, tmp_path, capsys):
    sink = ["--sinks", str(copy / "sink")]
    missing = tmp_path / "nope"
    assert main(["verify", "--run", str(missing), *sink]) == 2
    assert str(missing) in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["verify", "--run", str(empty), *sink]) == 2
    assert "run_id" in capsys.readouterr().err

    (copy / "vb" / "requests.ndjson").unlink()
    (copy / "vb" / "requests.ndjson").mkdir()  # unreadable as a file
    assert main(["verify", "--run", str(copy / "vb"), *sink]) == 2
    assert "requests.ndjson" in capsys.readouterr().err

    assert main(["verify", "--run", str(copy / "vg"), "--sinks", str(tmp_path / "none" / "*.ndjson")]) == 2
    assert "no sink file matches" in capsys.readouterr().err

    with pytest.raises(VerifyInputError, match="appears twice"):
        verify([copy / "vg", copy / "vg"], sink[1:])


def test_default_sinks_are_under_the_project_root():
    root = verify_mod.PROJECT_ROOT
    assert root == Path(verify_mod.__file__).resolve().parents[1]  # this checkout, whatever the cwd
    assert (root / "pyproject.toml").is_file()
    assert verify_mod.DEFAULT_SINK_GLOB == ".lab/**/sink/*.ndjson"
