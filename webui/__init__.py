"""bluegreen's dashboard: watch and drive deployments from the browser.

`create_app(config)` builds the Flask app; `python -m webui` serves it with waitress. The dashboard
has no deployment logic of its own: its buttons run the project's playbooks through ansible-runner
(only those on the allow-list in actions.py) and it reads the controller's state files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import bluegreen  # noqa: F401  (first: puts plugins/module_utils on ansible.module_utils' path)

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The dashboard app. `config`: keys of webui.config.DEFAULTS; the environment (and the TOML file it
    names) is read only when config is None."""
    # imported on use, so `python -m webui.users` does not load Flask's app, ansible-runner and friends
    from webui.app import build  # noqa: PLC0415

    return build(config)
