#!/usr/bin/python
"""Does a logplatform node run the configuration Ansible rendered for it? Returns that configuration."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_config_check
short_description: Check that a logplatform node runs the configuration rendered for it
description:
  - Runs the node's own release on the rendered file, C(<release_dir>/venv/bin/logplatform --check-config
    --config <config_path>), which validates it and prints its effective configuration (defaults applied)
    and both digests; then reads the running node's C(/version).
  - Check C(config_rendered) passes when the node's running C(config_digest) equals the digest of the
    file. When they differ the file changed after the node started (edited by hand, or rendered without
    a restart); the message says whether shared settings or only node-specific keys (node, color,
    listen_host, listen_port, sink_dir) differ.
  - Returns the file's effective configuration and its C(shared_config_digest), so that
    M(bluegreen_config_drift) can compare all idle nodes, and blue with green, key by key.
  - Only reads; runs the same in check mode. The command is run with an argument list, never a shell.
options:
  url:
    description: Base URL of the node, for example C(http://127.0.0.1:9101) (C(logplatform_local_url)).
    type: str
    required: true
  config_path:
    description: The rendered configuration file of the node (C(logplatform_config_path)).
    type: path
    required: true
  release_dir:
    description: Release directory of the node's version (C(logplatform_release_dir)); its
      C(venv/bin/logplatform) computes the digest. Exactly one of I(release_dir) and I(logplatform_bin).
    type: path
  logplatform_bin:
    description: Path of the C(logplatform) executable to use instead of the one in I(release_dir).
    type: path
  node:
    description: Name of the node in records and messages. Default, the C(node) the service reports in
      C(/version), else the C(node) of the file.
    type: str
  request_timeout:
    description: Seconds the C(/version) request may take.
    type: float
    default: 5
author: bluegreen
"""

EXAMPLES = r"""
- name: Check the idle node runs the configuration rendered for it
  bluegreen_config_check:
    url: "{{ logplatform_local_url }}"
    config_path: "{{ logplatform_config_path }}"
    release_dir: "{{ logplatform_release_dir }}"
    node: "{{ inventory_hostname }}"
  register: bluegreen_config
"""

RETURN = r"""
records:
  description: The check record C(config_rendered) (name, node, observed = running config_digest,
    threshold = the file's config_digest, op, verdict, message, detail).
  returned: always
  type: list
  elements: dict
node:
  description: The node name used in the records.
  returned: always
  type: str
color:
  description: The color the file configures.
  returned: when the file is valid
  type: str
config:
  description: The file's effective configuration (defaults applied; C(fault) as a nested table).
  returned: when the file is valid
  type: dict
config_digest:
  description: sha256 of the file's effective configuration.
  returned: when the file is valid
  type: str
shared_config_digest:
  description: sha256 of the file's effective configuration without the node-specific keys.
  returned: when the file is valid
  type: str
running:
  description: What the running node reports in C(/version) (version, color, node, config_digest,
    shared_config_digest, started_at), or null when it could not be read.
  returned: always
  type: dict
config_path:
  description: The file checked.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_checks import (
    CheckError,
    check_config_file,
    get_json,
    join_url,
    record,
)


def rendered_record(node: str, path: str, rendered: dict, running: dict) -> dict:
    observed, expected = running.get("config_digest"), rendered["config_digest"]
    ok = observed == expected
    detail = {
        "config_path": path,
        "running_shared_config_digest": running.get("shared_config_digest"),
        "file_shared_config_digest": rendered["shared_config_digest"],
    }
    message = None
    if not ok:
        if running.get("shared_config_digest") != rendered["shared_config_digest"]:
            which = "shared settings differ (bluegreen_config_drift against the other nodes names the keys)"
        else:
            identity = [
                f"{key} {running.get(key)!r} running, {rendered['config'].get(key)!r} in the file"
                for key in ("node", "color")
                if running.get(key) != rendered["config"].get(key)
            ]
            which = "only node-specific keys differ" + (
                f": {', '.join(identity)}" if identity else " (listen_host, listen_port or sink_dir)"
            )
        message = (
            f"check config_rendered on {node}: observed running config_digest {str(observed)[:12]}, "
            f"threshold == {expected[:12]} (digest of {path}): "
            f"the file changed after the node started; {which}"
        )
    return record("config_rendered", node, observed, expected, ok, op="==", detail=detail, message=message)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "config_path": {"type": "path", "required": True},
            "release_dir": {"type": "path"},
            "logplatform_bin": {"type": "path"},
            "node": {"type": "str"},
            "request_timeout": {"type": "float", "default": 5.0},
        },
        required_one_of=[("release_dir", "logplatform_bin")],
        mutually_exclusive=[("release_dir", "logplatform_bin")],
        supports_check_mode=True,
    )
    p = module.params
    binary = p["logplatform_bin"] or os.path.join(p["release_dir"], "venv", "bin", "logplatform")
    path = p["config_path"]
    result: dict = {"changed": False, "config_path": path, "running": None}

    running, running_error = None, None
    try:
        running = get_json(join_url(p["url"], "/version"), p["request_timeout"])
    except CheckError as exc:
        running_error = str(exc)
    result["running"] = running

    try:
        rendered = check_config_file(module.run_command, binary, path)
    except CheckError as exc:
        node = p["node"] or (running or {}).get("node") or p["url"]
        records = [
            record(
                "config_rendered",
                node,
                (running or {}).get("config_digest"),
                None,
                False,
                op="==",
                message=f"check config_rendered on {node}: the rendered file has no digest: {exc}",
            )
        ]
        module.fail_json(msg=records[0]["message"], node=node, records=records, **result)

    node = p["node"] or (running or {}).get("node") or rendered["config"].get("node")
    result.update(node=node, color=rendered["config"].get("color"), **rendered)
    if running is None:
        records = [
            record(
                "config_rendered",
                node,
                None,
                rendered["config_digest"],
                False,
                op="==",
                message=(
                    f"check config_rendered on {node}: observed no running config_digest ({running_error}), "
                    f"threshold == {rendered['config_digest'][:12]} (digest of {path})"
                ),
            )
        ]
    else:
        records = [rendered_record(node, path, rendered, running)]
    result["records"] = records
    if records[0]["verdict"] == "fail":
        module.fail_json(msg=records[0]["message"], **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
