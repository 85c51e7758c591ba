"""bluegreen: the operator's toolkit around the Ansible playbooks (releases, evidence tools, CLI).

Importing the package puts our plugins/module_utils/ on `ansible.module_utils`' import path, the way
Ansible imports them for our modules: the CLI and the dashboard (webui imports this package first) run
the controller's own code, e.g. `from ansible.module_utils.bluegreen_version import check_version`.
"""

from pathlib import Path

import ansible.module_utils

MODULE_UTILS = str(Path(__file__).resolve().parent.parent / "plugins" / "module_utils")
if MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(MODULE_UTILS)
