"""The linear strategy run by mitogen (https://mitogen.networkgenomics.com/ansible_detailed.html).

ansible.cfg selects it (`strategy = mitogen_linear`). Mitogen ships this plugin inside its package, whose
path depends on the virtualenv; this file makes it found through our own `strategy_plugins` directory.
Mitogen keeps one Python per host and user for the whole run and runs modules in it, instead of forking a
worker and starting a new interpreter for every task: the controller's tasks cost a third of the time.
"""

from __future__ import annotations

from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

__all__ = ["StrategyModule"]
