#!/usr/bin/python
"""The end-to-end canary of stage 3, as check records: one entry per node through the frontend that
serves the target color, found in that node's sink, processed by the target version."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_canary
short_description: A canary entry through a color's frontend to each node, found in the node's sink
description:
  - The end-to-end gate of stage 3. A node must take a uniquely identified entry through the frontend
    that serves its color (preview for the idle color), answer it 200, and write it to its sink processed
    by the target version (the entry's C(_version)) within I(timeout) seconds.
  - With I(url), it sends. It POSTs canary entries (service C(bluegreen-canary), ids C(<id>-<attempt>))
    through I(url) until every node of I(nodes) has answered one (HAProxy names the node and color
    that answered in C(X-Bluegreen-Node) and C(X-Bluegreen-Color)), at most I(attempts) entries.
    One C(canary_routed) record per node; C(sent) maps each node to the id of the entry it took.
    An entry answered by another node lands in that node's sink like any entry.
  - With I(sink_dir), it finds. On the node's host, it waits until the entry I(id) is in one of the
    C(*.ndjson) files of I(sink_dir) with C(_version) I(version), for at most I(timeout) seconds (the sink
    commits in groups, so the wait is normal). One C(canary_in_sink) record for I(node).
  - With both, does both for one node (I(nodes) defaults to I(node)), in one call, from a host that
    reaches the frontend and holds the sink. The role sends from the lb (the preview frontend listens on
    loopback there) and finds on each node, in two calls.
  - Every record has C(name), C(node), C(observed), C(threshold), C(op), C(verdict) and C(message) (as
    C(bluegreen_judge) expects); the module fails naming every failed check, its node, the observed value
    and the threshold.
  - In check mode no entry is sent (the C(canary_routed) records say C(skip)); finding only reads.
options:
  url:
    description: Base URL of the frontend that serves the target color, for example the preview
      frontend C(http://127.0.0.1:8081). Entries are POSTed to C(/v1/logs) under it.
    type: str
  nodes:
    description: Nodes (as HAProxy names its servers) that must each take one canary through I(url).
      Default, I(node).
    type: list
    elements: str
  color:
    description: The color the nodes belong to; an answer from another color does not count. Without
      it the color is not judged.
    type: str
  sink_dir:
    description: The node's sink directory on this host (C(logplatform_sink_dir)), where the entry is
      looked for.
    type: path
  node:
    description: The node whose sink is read, in records and messages.
    type: str
  id:
    description: With I(url), the prefix of the canary entries' ids; with I(sink_dir) alone, the id of
      the entry to find (C(sent[node]) of the sending call).
    type: str
    required: true
  version:
    description: The C(_version) the entry must carry in the sink (the target release).
    type: str
  timeout:
    description: Seconds every node of I(nodes) may take to answer one entry through I(url) (a node
      HAProxy does not see up yet gets none), and seconds the entry may take to reach the sink.
    type: float
    default: 15
  attempts:
    description: Most entries sent through I(url) to reach every node. Default, forty per node and ten.
    type: int
  request_timeout:
    description: Seconds one request through the frontend may take.
    type: float
    default: 5
requirements: [Python 3 on the host (standard library only)]
author: bluegreen
"""

EXAMPLES = r"""
- name: Send a canary through the preview frontend to each idle node (on the lb)
  bluegreen_canary:
    url: http://127.0.0.1:8081
    color: green
    nodes: [green-1, green-2]
    id: canary-20260101T000000Z-deploy-1.1.0-ab12cd
  delegate_to: lb-1
  run_once: true
  register: canary

- name: Find the node's canary in its sink, processed by 1.1.0 (on each idle node)
  bluegreen_canary:
    sink_dir: "{{ logplatform_sink_dir }}"
    node: "{{ inventory_hostname }}"
    id: "{{ canary.sent[inventory_hostname] }}"
    version: 1.1.0
    timeout: 15
  when: inventory_hostname in canary.sent

- name: Both for one node, from a host that reaches the frontend and holds the sink
  bluegreen_canary:
    url: http://127.0.0.1:8081
    color: green
    sink_dir: /var/lib/logplatform/sink
    node: green-1
    id: canary-manual
    version: 1.1.0
"""

RETURN = r"""
records:
  description: C(canary_routed) per node (when sending), then C(canary_in_sink) (when finding); each
    with C(name), C(node), C(observed), C(threshold), C(op), C(verdict) (pass, fail or skip), C(message)
    and C(detail).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: canary_routed, node: green-1, observed: 200 from green green-1, op: "==",
       threshold: 200 from green-1 of green, verdict: pass,
       message: "check canary_routed on green-1: observed 200 from green green-1,
         threshold == 200 from green-1 of green",
       detail: {id: canary-x-1, attempts: 1}}
    - {name: canary_in_sink, node: green-1, observed: in sink,
       threshold: in sink with _version 1.1.0 within 15s, op: "==", verdict: pass,
       message: "check canary_in_sink on green-1: observed canary canary-x-1 in the sink
         /var/lib/logplatform/sink, threshold == in sink with _version 1.1.0 within 15s",
       detail: {waited_s: 0.21}}
sent:
  description: Node -> id of the canary entry it answered (only the nodes that answered one, with 200, of
    I(color)).
  returned: always
  type: dict
  sample: {green-1: canary-x-1, green-2: canary-x-2}
answers:
  description: Every entry sent through I(url), in order, with who answered it and how.
  returned: when I(url) is given and not in check mode
  type: list
  elements: dict
found:
  description: Whether the entry is in the sink with the expected C(_version).
  returned: when I(sink_dir) is given
  type: bool
"""

import json
import time
from collections import Counter
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_checks import failed, failure_message, record
from ansible.module_utils.bluegreen_traffic import describe_probe, probe

SERVICE = "bluegreen-canary"
POLL_SECONDS = 0.2
# between two entries through the frontend that reached no node still waiting for one
PAUSE_SECONDS = 0.25
# sink files written before this many seconds ahead of the search cannot hold the canary
RECENT_SECONDS = 120.0


# --- sending ----------------------------------------------------------------------------------------------
def answered(answer: dict) -> str:
    """Who answered an entry, as a record's observed value: `200 from green green-1`."""
    if answer["status"] is None:
        return f"no answer ({answer['error']})"
    return f"{answer['status']} from {answer['color'] or 'no color'} {answer['node'] or 'no node'}"


def send(
    url: str,
    nodes: list[str],
    color: str | None,
    *,
    id_prefix: str,
    attempts: int,
    window: float,
    timeout: float,
) -> dict:
    """Entries through the frontend until each node took one (200, of `color`): at most `attempts`
    entries, and no new one after `window` seconds. HAProxy sends nothing to a node before its health
    checks see it up (a node just restarted may still be down there): an answer by another color or
    none at all is followed by a pause. So is a sweep of answers (as many as there are nodes) by nodes
    that have their entry already, but not each one of them: when every server of a backend was down
    and they come back one by one (a deploy restarts the whole idle color), HAProxy 2.6's roundrobin
    serves the first ones back for a while before the others, though all are up (80 requests to 16
    such servers missed 5 of them on this machine); paced one entry per pause, the canary missed a node
    of 16 in its 15 s window."""
    sent: dict[str, str] = {}
    answers: list[dict] = []
    repeats = 0  # answers in a row by nodes that have their entry already
    deadline = time.monotonic() + window
    for attempt in range(1, attempts + 1):
        entry_id = f"{id_prefix}-{attempt}"
        answer = probe(url, entry_id, timeout, service=SERVICE, message=f"canary {entry_id}")
        answers.append({"id": entry_id, **answer})
        node = answer["node"]
        good = answer["status"] == 200 and (color is None or answer["color"] == color)
        if good and node in nodes and node not in sent:
            sent[node] = entry_id
            repeats = 0
            if len(sent) == len(nodes):
                break
            continue
        if time.monotonic() >= deadline:
            break
        repeats = repeats + 1 if good and node in sent else len(nodes)
        if repeats >= len(nodes):
            repeats = 0
            time.sleep(PAUSE_SECONDS)
    return {"sent": sent, "answers": answers}


def routed_records(url: str, nodes: list[str], color: str | None, outcome: dict) -> list[dict]:
    answers = outcome["answers"]
    of = f" of {color}" if color else ""
    records = []
    for node in nodes:
        threshold = f"200 from {node}{of}"
        entry_id = outcome["sent"].get(node)
        if entry_id is not None:
            answer = next(a for a in answers if a["id"] == entry_id)
            observed = answered(answer)
            detail = {"id": entry_id, "attempts": answers.index(answer) + 1, "url": url}
            records.append(record("canary_routed", node, observed, threshold, True, op="==", detail=detail))
            continue
        seen = Counter(answered(a) for a in answers)
        observed = f"never answered by {node} in {len(answers)} entries through {url}: " + ", ".join(
            f"{what} x{count}" for what, count in seen.most_common()
        )
        last = describe_probe(answers[-1]) if answers else "nothing sent"
        message = (
            f"check canary_routed on {node}: observed {observed} (last {last}), threshold == {threshold}"
        )
        detail = {"attempts": len(answers), "url": url}
        records.append(
            record("canary_routed", node, observed, threshold, False, op="==", detail=detail, message=message)
        )
    return records


# --- finding ----------------------------------------------------------------------------------------------
class SinkReader:
    """Reads what a node's sink files gain, once each: the recent files whole, then what is appended."""

    def __init__(self, sink_dir: Path, since: float) -> None:
        self.sink_dir = sink_dir
        self.since = since
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, bytes] = {}

    def new_lines(self) -> list[bytes]:
        lines: list[bytes] = []
        for path in sorted(self.sink_dir.glob("*.ndjson")):
            try:
                stat = path.stat()
                if path not in self.offsets and stat.st_mtime < self.since:
                    continue
                offset = self.offsets.get(path, 0)
                if stat.st_size <= offset:
                    continue
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except OSError:
                continue  # rotated away meanwhile: its successor is read on the next pass
            self.offsets[path] = offset + len(chunk)
            *complete, rest = (self.partial.pop(path, b"") + chunk).split(b"\n")
            self.partial[path] = rest
            lines += complete
        return lines


def find_in_sink(sink_dir: str, entry_id: str, timeout: float) -> dict:
    """Wait for the entry in the sink: its line (parsed) or None, and how long it took."""
    started = time.monotonic()
    reader = SinkReader(Path(sink_dir), time.time() - RECENT_SECONDS)
    needle = entry_id.encode()
    while True:
        for line in reader.new_lines():
            if needle not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("id") == entry_id:
                return {"entry": entry, "waited_s": round(time.monotonic() - started, 3)}
        if time.monotonic() - started >= timeout:
            return {"entry": None, "waited_s": round(time.monotonic() - started, 3)}
        time.sleep(POLL_SECONDS)


def sink_record(
    node: str, sink_dir: str, *, entry_id: str, version: str, timeout: float, found: dict
) -> dict:
    threshold = f"in sink with _version {version} within {timeout:g}s"
    entry = found["entry"]
    detail = {"id": entry_id, "waited_s": found["waited_s"], "sink_dir": sink_dir}
    if entry is None:
        observed, where = "not in sink", f"canary {entry_id} NOT in the sink {sink_dir}"
    elif entry.get("_version") != version:
        observed = f"in sink with _version {entry.get('_version')}"
        where = f"canary {entry_id} in the sink {sink_dir} with _version {entry.get('_version')}"
    else:
        observed, where = "in sink", f"canary {entry_id} in the sink {sink_dir}"
    ok = observed == "in sink"
    message = f"check canary_in_sink on {node}: observed {where}, threshold == {threshold}"
    return record("canary_in_sink", node, observed, threshold, ok, op="==", detail=detail, message=message)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str"},
            "nodes": {"type": "list", "elements": "str"},
            "color": {"type": "str"},
            "sink_dir": {"type": "path"},
            "node": {"type": "str"},
            "id": {"type": "str", "required": True},
            "version": {"type": "str"},
            "timeout": {"type": "float", "default": 15.0},
            "attempts": {"type": "int"},
            "request_timeout": {"type": "float", "default": 5.0},
        },
        required_one_of=[("url", "sink_dir")],
        required_by={"sink_dir": ("node", "version")},
        supports_check_mode=True,
    )
    p = module.params
    if not p["id"]:
        module.fail_json(msg="bluegreen_canary: id must not be empty")
    nodes = p["nodes"] or ([p["node"]] if p["node"] else [])
    if p["url"] and not nodes:
        module.fail_json(msg="bluegreen_canary: sending through url needs nodes (or node)")
    result: dict = {"changed": False, "records": [], "sent": {}}
    entry_id = p["id"]
    if p["url"]:
        if module.check_mode:
            of = f" of {p['color']}" if p["color"] else ""
            result["records"] += [
                record(
                    "canary_routed",
                    node,
                    None,
                    f"200 from {node}{of}",
                    None,
                    op="==",
                    message=f"check canary_routed on {node}: not sent in check mode",
                )
                for node in nodes
            ]
        else:
            outcome = send(
                p["url"],
                nodes,
                p["color"],
                id_prefix=p["id"],
                attempts=p["attempts"] or 40 * len(nodes) + 10,
                window=p["timeout"],
                timeout=p["request_timeout"],
            )
            result.update(outcome)
            result["records"] += routed_records(p["url"], nodes, p["color"], outcome)
        entry_id = result["sent"].get(p["node"]) if p["sink_dir"] else None
    if p["sink_dir"] and entry_id:
        found = find_in_sink(p["sink_dir"], entry_id, p["timeout"])
        result["found"] = found["entry"] is not None and found["entry"].get("_version") == p["version"]
        result["records"].append(
            sink_record(
                p["node"],
                p["sink_dir"],
                entry_id=entry_id,
                version=p["version"],
                timeout=p["timeout"],
                found=found,
            )
        )
    if failed(result["records"]):
        module.fail_json(msg=failure_message(result["records"], "bluegreen_canary"), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
