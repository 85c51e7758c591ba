"""Shared test plumbing: where the repository, the venv and the lab live."""

from __future__ import annotations

import sys
from pathlib import Path

import ansible.module_utils

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LAB = REPO / ".lab"

# Our module_utils import as ansible.module_utils.<name>, as they do when Ansible runs our modules.
if str(REPO / "plugins" / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(REPO / "plugins" / "module_utils"))
