#!/usr/bin/python
"""Make directories and write small files whose content the play has, all in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_files
short_description: Make directories and write small files in one module run, each only when it differs
description:
  - What a row of M(ansible.builtin.file) and M(ansible.builtin.copy) (with C(content)) tasks does, in one
    module run instead of two per file (the copy action's stat, then the copy); a role that writes
    several small files on a host pays once.
  - Makes I(dirs) first (with parents, at their mode and owner), then writes each of I(files) when its
    content differs, atomically (a temporary file beside it, fsync, rename, directory fsync), and keeps
    its mode.
  - A file with I(force=false) is state, not configuration; it is written only when it does not exist.
  - Check mode changes nothing and reports what would change; with C(--diff) each changed file's before
    and after.
extends_documentation_fragment:
  - bluegreen_dirs
options:
  files:
    description: Files to write.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file; its directory must exist (or be one of I(dirs)).
        type: path
        required: true
      content:
        description: Its whole text.
        type: str
        required: true
      mode:
        description: Its mode, for example C('0640'); kept on an existing file too.
        type: str
        default: "0640"
      force:
        description: Replace a file whose content differs; false writes it only when it does not exist.
        type: bool
        default: true
author: bluegreen
"""

EXAMPLES = r"""
- name: Write HAProxy's maps and Lua beside its directory
  bluegreen_files:
    dirs:
      - {path: /var/lib/bluegreen/haproxy, mode: "0750"}
    files:
      - {path: /var/lib/bluegreen/haproxy/live.map, content: "live blue\n", force: false}
      - {path: /var/lib/bluegreen/haproxy/idle.map, content: "blue green\ngreen blue\n"}
"""

RETURN = r"""
written:
  description: The files this run wrote (or, in check mode, would write), in the order given.
  returned: always
  type: list
  elements: str
"""

import os
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_files import DIR_OPTIONS, atomic_write, make_dirs, read_text


def file_mode(module: AnsibleModule, path: str, mode: str) -> int:
    try:
        return int(mode, 8)
    except ValueError:
        module.fail_json(msg=f"{path}: mode {mode!r} is not an octal mode such as '0640'")
        raise  # unreachable: fail_json exits


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dirs": {"type": "list", "elements": "dict", "default": [], "options": DIR_OPTIONS},
            "files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "path": {"type": "path", "required": True},
                    "content": {"type": "str", "required": True},
                    "mode": {"type": "str", "default": "0640"},
                    "force": {"type": "bool", "default": True},
                },
            },
        },
        supports_check_mode=True,
    )
    changed = make_dirs(module, module.params["dirs"])
    written: list[str] = []
    diffs: list[dict] = []
    for spec in module.params["files"]:
        path, content = spec["path"], spec["content"]
        mode = file_mode(module, path, spec["mode"])
        if os.path.isdir(path):
            module.fail_json(msg=f"{path} is a directory, not a file", written=written)
        before = read_text(path)
        if before is None or (spec["force"] and before != content):
            written.append(path)
            diffs.append(
                {"before_header": path, "after_header": path, "before": before or "", "after": content}
            )
            if not module.check_mode:
                if not os.path.isdir(os.path.dirname(path) or "."):
                    module.fail_json(msg=f"{path}: its directory does not exist", written=written[:-1])
                atomic_write(path, content, mode)
        elif stat.S_IMODE(os.stat(path).st_mode) != mode:
            changed = True
            if not module.check_mode:
                os.chmod(path, mode)
    result: dict = {"changed": changed or bool(written), "written": written}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
