"""Every module's DOCUMENTATION, with its doc fragments, is valid YAML that ansible-doc reads: a module
whose documentation does not parse has no `ansible-doc` page, and its options go unchecked against the
argument spec (issue 16's `ansible-test sanity` will check that part)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("bluegreen_*.py"))


def test_ansible_doc_reads_every_module_with_its_fragments():
    ansible_doc = Path(sys.executable).with_name("ansible-doc")
    result = subprocess.run(
        [str(ansible_doc), "--json", *MODULES],
        cwd=ROOT,  # ansible.cfg: library, module_utils, doc_fragment_plugins
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ERROR" not in result.stderr, result.stderr[-3000:]
    docs = json.loads(result.stdout)
    assert sorted(docs) == MODULES
    for name, page in docs.items():
        assert page["doc"]["module"] == name
        assert page["doc"]["short_description"], name
    # a fragment's options are merged into the module's own
    for name in ("bluegreen_files", "bluegreen_release"):
        assert "dirs" in docs[name]["doc"]["options"], name
