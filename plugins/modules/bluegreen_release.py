#!/usr/bin/python
"""Unpack a prebuilt logplatform release or tool environment (from `bluegreen release`) on a host; point
`current` at it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_release
short_description: Install a prebuilt logplatform release on a node and point current at it
description:
  - A release artifact (C(release.tar.gz) from C(bluegreen release)) holds a complete relocatable
    virtualenv, C(venv/). Installing it is unpacking it; nothing is built or downloaded on the node.
  - The environment of a tool the hosts run (supervisor, from C(bluegreen release --package supervisor))
    is the same kind of artifact and is installed the same way; messages then name it (C(supervisor
    4.3.0)) and its role's interpreter variable (C(supervisor_python)).
  - Skips the work when the release is already installed with the same artifact (the marker
    C(<dest>/.artifact-<sha256>)); a release rebuilt under the same version is unpacked again.
  - Before unpacking, checks that the node's interpreter is the one the artifact was built for (same
    implementation, cache tag, SOABI and platform, as recorded in the manifest) and refuses a mismatch
    naming both; it may live at another path than on the builder, the virtualenv is pointed at it.
  - Unpacks into a temporary directory beside I(dest) and renames it into place, so a run killed half
    way never leaves a release that looks installed.
  - With I(link), points that symlink (the node's C(current)) at I(dest), atomically.
  - Check mode changes nothing (the artifact need not be on the node) and reports what would change;
    with C(--diff) it shows where I(link) would point.
  - Makes the node's directories (I(dirs)) first, in the same call, so that a deploy pays one module
    run for the node's layout, the question "is this release installed" and nothing else
    (I(state=query)), then copies the artifact only when it is not.
extends_documentation_fragment:
  - bluegreen_dirs
options:
  state:
    description:
      - C(present) installs the release (unless it is) and points I(link) at it.
      - C(query) only makes I(dirs) and says in C(present) whether the release is installed (false when
        I(manifest) has no C(artifact_sha256)) and, with I(link), in C(link_ok) whether it points there.
    type: str
    choices: [present, query]
    default: present
  dest:
    description: The release directory on the node, C(<logplatform_root>/releases/<version>).
    type: path
    required: true
  manifest:
    description: The release's C(manifest.json) from the controller's release store (format 2).
    type: dict
    required: true
  archive:
    description: The artifact copied to the node. Required when the release is not installed yet.
    type: path
  python:
    description: The node's interpreter for the release. Default, the one the manifest records.
    type: str
  run_as:
    description:
      - The user the release will run as (the node's service user). Before unpacking, the interpreter
        is checked to be reachable and executable by that user (every directory on its path, and on the
        path it links to); one that is not (the builder's pyenv under C(/root), 0700) is refused naming
        the user, the interpreter and what blocks it. Default, no check (the release runs as the
        process manager's user).
    type: str
  link:
    description: A symlink to point at I(dest) (the node's C(current)), or at its virtualenv (I(link_to)).
    type: path
  link_to:
    description:
      - What I(link) points at. C(dest) is I(dest) itself (logplatform's C(current)); C(venv) is the
        virtualenv inside it, C(<dest>/venv) (supervisor's C(<root>/venv), the stable path of its programs).
    type: str
    choices: [dest, venv]
    default: dest
  node:
    description: Name of the node in messages (C(inventory_hostname)). Default, the host's name.
    type: str
  keep_archive:
    description: Keep I(archive) after unpacking it (by default it is removed, the release dir holds it all).
    type: bool
    default: false
author: bluegreen
"""

EXAMPLES = r"""
- name: Install the release and point current at it
  bluegreen_release:
    dest: /opt/logplatform/releases/1.2.0
    archive: /opt/logplatform/store/1.2.0.tar.gz
    manifest: "{{ lookup('ansible.builtin.file', '/srv/releases/1.2.0/manifest.json') | from_json }}"
    link: /opt/logplatform/current
"""

RETURN = r"""
present:
  description: Whether the release was installed on the node before this run (its marker was there).
  returned: always
  type: bool
installed:
  description: Whether the release was unpacked by this run (false when it was already there).
  returned: always
  type: bool
linked:
  description: Whether I(link) was changed to point at I(dest).
  returned: always
  type: bool
link_ok:
  description: Whether I(link) pointed where it should before this run (always false without I(link)).
  returned: always
  type: bool
python:
  description: The node's interpreter that was checked (executable, version, cache_tag, soabi, platform).
  returned: when the release was installed by this run
  type: dict
dest:
  description: The release directory.
  returned: always
  type: str
"""

import grp
import json
import os
import pwd
import shutil
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_files import DIR_OPTIONS, fsync_dir, make_dirs

PROBE = (
    "import json, os, sys, sysconfig; print(json.dumps({"
    "'executable': os.path.realpath(sys.executable), "
    "'version': '%d.%d.%d' % sys.version_info[:3], "
    "'implementation': sys.implementation.name, 'cache_tag': sys.implementation.cache_tag, "
    "'soabi': sysconfig.get_config_var('SOABI') or '', 'platform': sysconfig.get_platform()}))"
)
# What must match for the compiled dependencies to load; the patch version and the path may differ.
MUST_MATCH = ("implementation", "cache_tag", "soabi", "platform")


def describe(python: dict) -> str:
    return (
        f"{python.get('implementation')} {python.get('version')} ({python.get('cache_tag')}, "
        f"{python.get('soabi')}, {python.get('platform')}) at {python.get('executable')}"
    )


def artifact_name(manifest: dict) -> str:
    """How messages name the artifact: `release 1.2.0` (logplatform's), `supervisor 4.3.0` (a tool's)."""
    name = manifest.get("name") or "logplatform"
    return f"{'release' if name == 'logplatform' else name} {manifest.get('version')}"


def python_variable(manifest: dict) -> str:
    """The role variable that names a host's interpreter for this artifact (logplatform_python, ...)."""
    return f"{manifest.get('name') or 'logplatform'}_python"


def node_python(module: AnsibleModule, wanted: str, built: dict, node: str) -> dict:
    """The node's interpreter, checked against the one the artifact was built for."""
    manifest = module.params["manifest"]
    path = wanted if os.path.isabs(wanted) else module.get_bin_path(wanted)
    if not path or not os.access(path, os.X_OK):
        module.fail_json(
            msg=(
                f"node {node}: no interpreter {wanted!r} for {artifact_name(manifest)}, which was built "
                f"for {describe(built)}; install that Python or set {python_variable(manifest)}"
            )
        )
    rc, out, err = module.run_command([path, "-c", PROBE])
    try:
        found = json.loads(out) if rc == 0 else None
    except ValueError:
        found = None
    if not found:
        detail = err.strip()[-500:]
        module.fail_json(msg=f"node {node}: {path} could not describe itself (exit {rc}): {detail}")
    differs = [key for key in MUST_MATCH if found.get(key) != built.get(key)]
    if differs:
        module.fail_json(
            msg=(
                f"node {node}: {artifact_name(manifest)} was built for {describe(built)}, "
                f"but {wanted} on this node is {describe(found)} ({', '.join(differs)} differ); "
                f"set {python_variable(manifest)} to a matching interpreter, or build it on a controller "
                "with the nodes' Python"
            ),
            python=found,
        )
    return found


def blocked_for(user: str, path: str) -> str | None:
    """What keeps `user` from running the interpreter `path`: a directory on its path (or on the path of
    what it links to) that the user may not enter, or the file it may not execute; None when nothing."""
    account = pwd.getpwnam(user)
    if account.pw_uid == 0:
        return None
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}

    def allowed(info: os.stat_result, bits: tuple[int, int, int]) -> bool:
        if info.st_uid == account.pw_uid:
            return bool(info.st_mode & bits[0])
        if info.st_gid in groups:
            return bool(info.st_mode & bits[1])
        return bool(info.st_mode & bits[2])

    search = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
    for each in dict.fromkeys([os.path.abspath(path), os.path.realpath(path)]):
        parent = os.path.dirname(each)
        while True:
            info = os.stat(parent)
            if not allowed(info, search):
                return f"{parent} is {stat.S_IMODE(info.st_mode):04o}, owned by {owner_name(info)}"
            if parent == "/":
                break
            parent = os.path.dirname(parent)
    target = os.path.realpath(path)
    info = os.stat(target)
    if not allowed(info, search):
        return f"{target} is {stat.S_IMODE(info.st_mode):04o}, owned by {owner_name(info)}"
    return None


def owner_name(info: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        user = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"{user}:{group}"


def check_run_as(module: AnsibleModule, user: str, python: dict, node: str) -> None:
    """The service user can run the node's interpreter, or the module fails saying why."""
    manifest = module.params["manifest"]
    try:
        blocked = blocked_for(user, python["executable"])
    except KeyError:
        module.fail_json(msg=f"node {node}: the service user {user} does not exist (create it first)")
    if blocked:
        module.fail_json(
            msg=(
                f"node {node}: the service user {user} cannot run the interpreter {python['executable']} "
                f"for {artifact_name(manifest)}: {blocked}; set {python_variable(manifest)} to an "
                f"interpreter it can reach (the host's own, e.g. /usr/bin/python3)"
            ),
            python=python,
        )


def point_venv_at(venv: str, python: dict) -> None:
    """The virtualenv's interpreter links and pyvenv.cfg `home` name the node's interpreter."""
    target = python["executable"]
    link = os.path.join(venv, "bin", "python")
    if os.path.islink(link) and os.readlink(link) != target:
        os.unlink(link)
        os.symlink(target, link)
    cfg = os.path.join(venv, "pyvenv.cfg")
    with open(cfg) as fh:
        lines = fh.read().splitlines()
    home = f"home = {os.path.dirname(target)}"
    lines = [home if line.startswith("home =") else line for line in lines]
    with open(cfg, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def remove(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def install(module: AnsibleModule, dest: str, marker: str, python: dict) -> None:
    p = module.params
    parent, name = os.path.split(dest)
    os.makedirs(parent, exist_ok=True)
    # what a killed earlier install left behind
    for entry in os.listdir(parent):
        if entry.startswith(f".{name}.tmp-") or entry.startswith(f".{name}.old-"):
            remove(os.path.join(parent, entry))
    staging = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    os.mkdir(staging)
    rc, _, err = module.run_command(["tar", "-xzf", p["archive"], "-C", staging, "--no-same-owner"])
    if rc != 0:
        remove(staging)
        detail = err.strip()[-500:]
        module.fail_json(msg=f"unpacking {p['archive']} into {staging} failed (exit {rc}): {detail}")
    point_venv_at(os.path.join(staging, "venv"), python)
    with open(os.path.join(staging, "manifest.json"), "w") as fh:
        json.dump(p["manifest"], fh, indent=2)
    with open(os.path.join(staging, marker), "w") as fh:
        fh.write(p["manifest"]["artifact_sha256"] + "\n")
    if os.path.lexists(dest):
        # a partial directory, or a release rebuilt under the same version: swap, then remove the old one
        old = os.path.join(parent, f".{name}.old-{os.getpid()}")
        os.rename(dest, old)
        os.rename(staging, dest)
        remove(old)
    else:
        os.rename(staging, dest)
    fsync_dir(parent)


def point_link(link: str, dest: str) -> None:
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(dest, tmp)
    os.replace(tmp, link)
    fsync_dir(os.path.dirname(link) or ".")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "manifest": {"type": "dict", "required": True},
            "archive": {"type": "path"},
            "python": {"type": "str"},
            "run_as": {"type": "str"},
            "link": {"type": "path"},
            "link_to": {"type": "str", "choices": ["dest", "venv"], "default": "dest"},
            "node": {"type": "str"},
            "keep_archive": {"type": "bool", "default": False},
            "state": {"type": "str", "choices": ["present", "query"], "default": "present"},
            "dirs": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": DIR_OPTIONS,
            },
        },
        supports_check_mode=True,
    )
    p = module.params
    dest, manifest, link = p["dest"].rstrip("/"), p["manifest"], p["link"]
    missing = [key for key in ("version", "artifact_sha256", "python") if not manifest.get(key)]
    if missing and p["state"] == "present":
        module.fail_json(
            msg=(
                f"the release manifest has no {', '.join(missing)}: "
                "it was built by an older `bluegreen release`; "
                f"rebuild it with `bluegreen release {manifest.get('version', 'x.y.z')} --force`"
            )
        )
    node = p["node"] or os.uname().nodename
    marker = f".artifact-{manifest.get('artifact_sha256')}"
    present = bool(manifest.get("artifact_sha256")) and os.path.exists(os.path.join(dest, marker))
    target = os.path.join(dest, "venv") if p["link_to"] == "venv" else dest
    link_ok = bool(link) and os.path.islink(link) and os.readlink(link) == target
    result: dict = {"changed": False, "present": present, "installed": False, "linked": False, "dest": dest}
    result.update(link_ok=link_ok, changed=make_dirs(module, p["dirs"]))
    if p["state"] == "query":
        module.exit_json(**result)

    if not present:
        if module.check_mode:
            # the artifact is not copied in check mode either: say what would be installed
            result.update(changed=True, installed=True)
        elif not p["archive"] or not os.path.isfile(p["archive"]):
            module.fail_json(
                msg=f"{artifact_name(manifest)} is not installed in {dest} and there is no artifact "
                f"to unpack (archive: {p['archive']!r})",
                **result,
            )
        else:
            wanted = p["python"] or manifest["python"]["executable"]
            python = node_python(module, wanted, manifest["python"], node)
            if p["run_as"]:
                check_run_as(module, p["run_as"], python, node)
            result.update(changed=True, installed=True, python=python)
            install(module, dest, marker, python)
    if p["archive"] and not p["keep_archive"] and os.path.exists(p["archive"]) and not module.check_mode:
        os.unlink(p["archive"])

    if link and not link_ok:
        if os.path.lexists(link) and not os.path.islink(link):
            module.fail_json(
                msg=f"{link} exists and is not a symlink; it must point at {target} (remove it once "
                "nothing runs from it: an older layout)",
                **result,
            )
        before = os.readlink(link) if os.path.islink(link) else "(none)"
        result.update(changed=True, linked=True)
        if module._diff:
            result["diff"] = {"before": f"{link} -> {before}\n", "after": f"{link} -> {target}\n"}
        if not module.check_mode:
            point_link(link, target)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
