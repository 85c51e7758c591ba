# bluegreen: every command the README documents, nothing hidden.
# `make demo` and `make test` set up everything they need themselves (scripts/bootstrap.sh).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
INVENTORY ?= inventories/local
PLAYBOOK := $(BIN)/ansible-playbook -i $(INVENTORY)
PYTEST_ARGS ?=

.PHONY: help setup setup-runtime lint test unit integration molecule demo release lab teardown status ui bench bench-scale clean lab-up lab-down

help:
	@echo "make demo      set up, build releases, run a blue/green upgrade under live load, print the result"
	@echo "make test      set up and run every test (lint, unit, integration)"
	@echo "make lint      ansible-lint (production profile) and ruff"
	@echo "make molecule  molecule test of each infrastructure role (haproxy, logplatform, supervisor) on SSH lab hosts (root)"
	@echo "make release VERSION=x.y.z   build logplatform x.y.z into .lab/releases/"
	@echo "make lab       bring up the one-machine lab (blue live);  make teardown  stops it"
	@echo "make lab-up N=2 LB=2   the SSH lab: LB load balancers, N blue and N green hosts over SSH (root)"
	@echo "               writes inventories/lab/hosts.yml (INVENTORY=inventories/lab);  make lab-down  removes it"
	@echo "make status    live color, versions, node health, lock, recent history"
	@echo "make ui        the dashboard on http://127.0.0.1:8090 (webui/README.md: add a user first)"
	@echo "make bench     controller (fresh site, deploy, switch, rollback), ingest, switch (atomic vs reload vs restart), deploy and shadow-traffic (shared cores, idle hosts) benchmarks: bench/results/"
	@echo "make bench-scale   deploy wall time per stage on the SSH lab with N=1,2,4,8,16 nodes a color (root;"
	@echo "               its own network namespace; SCALE_N=1,2 for fewer): bench/results/scale.json, scale.png"
	@echo "make clean     stop the lab and remove .lab/ and build output"

setup:
	@scripts/bootstrap.sh dev

setup-runtime:
	@scripts/bootstrap.sh runtime

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint --offline --profile production playbooks roles molecule

# pytest-xdist: as root every worker runs lab tests on a lab of its own (tests/lab_namespace.py), else
# the lab's tests (fixed ports) in one worker, the others beside them (tests/conftest.py, LabScheduling)
test: setup lint
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

unit: setup
	$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

integration: setup
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

# molecule: a scenario per infrastructure role (molecule/<role>/, .config/molecule/config.yml), one after another,
# each on an SSH lab of its own (root). What converge needs on the controller is built first, with the network
# (tests/integration/lab.py); the scenarios run in a network namespace of their own, where the lab's bridge and
# addresses exist only for them. `make test` runs the same scenarios (tests/integration/test_molecule.py).
molecule: setup
	$(BIN)/python -c 'from tests.integration.lab import fill_controller_caches; fill_controller_caches()'
	unshare -n bash -c 'ip link set lo up && PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/molecule test --all'

release: setup-runtime
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=x.y.z" >&2; exit 2; }
	$(BIN)/bluegreen release $(VERSION)

lab: setup-runtime
	$(PLAYBOOK) playbooks/site.yml

teardown: setup-runtime
	$(PLAYBOOK) playbooks/teardown.yml

# the SSH lab (bluegreen/sshlab.py): hosts made of Linux namespaces on this machine, reached over SSH
N ?= 2
LB ?= 2
lab-up: setup-runtime
	$(BIN)/bluegreen lab up --lbs $(LB) --nodes $(N)

lab-down: setup-runtime
	$(BIN)/bluegreen lab down

status: setup-runtime
	$(PLAYBOOK) playbooks/status.yml

# the dashboard on 127.0.0.1:8090 against the local lab (add a user first: see webui/README.md)
ui: setup-runtime
	$(BIN)/python -m webui

bench: setup lab
	$(BIN)/python bench/control.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/switch.py
	$(BIN)/python bench/deploy.py
	$(BIN)/python bench/shadow.py
	$(BIN)/python bench/shadow.py --idle-hosts --out bench/results/shadow-idle-hosts.json

# the SSH lab's scaling (bench/scale.py): the releases it deploys are built first, here (pip needs the
# network), then the bench runs in a network namespace of its own (the lab's bridge and addresses are fixed)
SCALE_N ?= 1,2,4,8,16
SUPERVISOR_VERSION := $(shell sed -n 's/^supervisor_version: "\(.*\)"/\1/p' roles/supervisor/defaults/main.yml)
LAB_INITIAL_VERSION := $(shell sed -n 's/^bluegreen_initial_version: "\(.*\)"/\1/p' inventories/lab/group_vars/all.yml)
bench-scale: setup
	$(BIN)/bluegreen release $(LAB_INITIAL_VERSION)
	$(BIN)/bluegreen release 1.1.0
	$(BIN)/bluegreen release --package supervisor $(SUPERVISOR_VERSION)
	unshare -n bash -c 'ip link set lo up; exec $(BIN)/python bench/scale.py --nodes $(SCALE_N)'

demo: setup-runtime
	$(BIN)/python -m bluegreen.demo

clean:
	-@[ -x $(BIN)/ansible-playbook ] && $(PLAYBOOK) playbooks/teardown.yml -e bluegreen_purge=true
	-@[ -x $(BIN)/bluegreen ] && [ -f .lab/sshlab/lab.json ] && $(BIN)/bluegreen lab down
	rm -rf .lab build dist *.egg-info logplatform/*.egg-info logplatform/build .pytest_cache .ruff_cache
