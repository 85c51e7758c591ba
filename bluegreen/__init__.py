"""bluegreen: the operator's toolkit around the Ansible playbooks (releases, evidence tools, CLI)."""
