"""`x is bluegreen_release_version`: the release version rule (module_utils/bluegreen_version.py) in plays."""

from __future__ import annotations

DOCUMENTATION = r"""
name: bluegreen_release_version
short_description: Is the value a release version (x.y.z, optional a/b/rcN suffix)
description:
  - True when the value is a string that is wholly a release version, C(x.y.z) with an optional PEP 440
    pre-release (C(1.2.0rc1)). A trailing newline, surrounding spaces, a path or anything else is false.
  - The rule lives in C(plugins/module_utils/bluegreen_version.py); C(bluegreen release), our modules
    and the dashboard apply the same one.
author: bluegreen
options:
  _input:
    description: The value to check.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Check the version to deploy
  ansible.builtin.assert:
    that: bluegreen_version is bluegreen_release_version
"""

RETURN = r"""
_value:
  description: Whether the value is a release version.
  type: bool
"""

from pathlib import Path

import ansible.module_utils

# Ansible imports our module_utils for modules (ansible.cfg module_utils), not for controller plugins:
# put them on the same import path, so this test runs the one rule the modules run.
_MODULE_UTILS = str(Path(__file__).resolve().parent.parent / "module_utils")
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

from ansible.module_utils.bluegreen_version import is_version


class TestModule:
    def tests(self):
        return {"bluegreen_release_version": is_version}
