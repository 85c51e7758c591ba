"""Shared test plumbing: where the repository, the venv and the lab live."""

from __future__ import annotations

import sys
from pathlib import Path

import bluegreen  # noqa: F401  (our module_utils import as ansible.module_utils.<name>, as for our modules)

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LAB = REPO / ".lab"
