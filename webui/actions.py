"""What a button may run: the allow-list of actions, their fields, and the validation of a form.

A form names an action and fills that action's fields; nothing else is accepted. Every field is
checked against a closed set (a release in the store, a color), and the playbook's extra vars are
built here from the checked values, never copied from the request. An action whose playbook is not
in the project is listed as unavailable and cannot be started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.module_utils.bluegreen_version import VersionError, check_version

from bluegreen.release import list_releases

# form fields every POST may carry besides the action's own
FORM_META = {"action", "csrf_token"}


class ActionRefused(Exception):
    """An action cannot start; `status` is the HTTP status to answer, the message says why."""

    def __init__(self, message: str, status: int = 400, lock: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.lock = lock


@dataclass(frozen=True)
class Field:
    name: str  # form field name
    var: str  # extra var it becomes
    kind: str  # "release": a version in the release store; "choice": one of `choices`
    label: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    playbook: str  # relative to the project dir
    description: str
    confirm: str  # the question the confirmation dialog asks; {field} placeholders are filled in
    fields: tuple[Field, ...] = ()
    fixed_vars: Mapping[str, Any] = field(default_factory=dict)
    # break-lock actions run only when the lock is held and stale; the others only when it is free
    needs_stale_lock: bool = False
    # the stages its playbook enters (the progress events' stage_start), in order (none: no progress bar)
    stages: tuple[str, ...] = ()
    # dashboard settings (webui/config.py keys) this action passes to its playbook, see SETTING_VARS
    settings: tuple[str, ...] = ()


DEPLOY_STAGES = ("preflight", "provision", "validate", "switch", "watch", "finish")
# setting -> the extra var it becomes; a setting of 0 passes nothing (the playbook's default holds).
# These come from the dashboard's own configuration, never from a form.
SETTING_VARS = {"WATCH_SECONDS": "bluegreen_watch_seconds"}
# every run carries the logged-in user, recorded by the controller as `actor` in lock and history
ACTOR_VAR = "bluegreen_actor"
RELEASE = Field("version", "bluegreen_version", "release", "Version")
COLOR = Field("color", "bluegreen_color", "choice", "Color", ("blue", "green"))

ACTIONS: tuple[Action, ...] = (
    Action(
        "deploy",
        "Deploy",
        "playbooks/deploy.yml",
        "Install a release on the idle color, validate it, switch traffic, watch, finish.",
        "Deploy {version} to the idle color and switch live traffic to it?",
        fields=(RELEASE,),
        stages=DEPLOY_STAGES,
        settings=("WATCH_SECONDS",),
    ),
    Action(
        "validate",
        "Validate",
        "playbooks/validate.yml",
        "Run the validation checks against the idle color; traffic does not move.",
        "Run the validation checks against the idle color?",
    ),
    Action(
        "switch",
        "Switch",
        "playbooks/switch.yml",
        "Make a color live in one runtime-API change (it must be up, ready and warm).",
        "Switch live traffic to {color}?",
        fields=(COLOR,),
    ),
    Action(
        "rollback",
        "Rollback",
        "playbooks/rollback.yml",
        "Move live traffic back to the warm previous color.",
        "Roll live traffic back to the previous color?",
    ),
    Action(
        "break-lock-deploy",
        "Break stale lock and deploy",
        "playbooks/deploy.yml",
        "Break the stale deploy lock (recorded in history), then deploy.",
        "Break the stale deploy lock and deploy {version}?",
        fields=(RELEASE,),
        fixed_vars={"bluegreen_break_lock": True},
        needs_stale_lock=True,
        stages=DEPLOY_STAGES,
        settings=("WATCH_SECONDS",),
    ),
    Action(
        "break-lock-rollback",
        "Break stale lock and roll back",
        "playbooks/rollback.yml",
        "Break the stale deploy lock (recorded in history), then roll back.",
        "Break the stale deploy lock and roll back to the previous color?",
        fixed_vars={"bluegreen_break_lock": True},
        needs_stale_lock=True,
    ),
)

BY_NAME = {action.name: action for action in ACTIONS}


def run_vars(action: Action, extravars: Mapping[str, Any], settings: Mapping[str, Any], user: str) -> dict:
    """The extra vars a run gets: the validated form's, the action's settings from the dashboard's
    configuration (when not 0), and the logged-in user as bluegreen_actor."""
    out = dict(extravars)
    for key in action.settings:
        if settings.get(key):
            out[SETTING_VARS[key]] = settings[key]
    out[ACTOR_VAR] = user
    return out


class Catalog:
    """The allow-list as it applies to one project dir and release store."""

    def __init__(self, project_dir: Path | str, release_store: Path | str) -> None:
        self.project_dir = Path(project_dir)
        self.release_store = Path(release_store)

    def releases(self) -> list[str]:
        return list_releases(self.release_store)

    def available(self, action: Action) -> bool:
        return (self.project_dir / action.playbook).is_file()

    def describe(self) -> list[dict]:
        """Every action with its fields, choices and availability (for the page and the API)."""
        releases = self.releases()
        out = []
        for action in ACTIONS:
            fields = [
                {
                    "name": f.name,
                    "label": f.label,
                    "choices": list(releases if f.kind == "release" else f.choices),
                }
                for f in action.fields
            ]
            out.append(
                {
                    "name": action.name,
                    "label": action.label,
                    "playbook": action.playbook,
                    "description": action.description,
                    "confirm": action.confirm,
                    "fields": fields,
                    "available": self.available(action),
                    "unavailable_reason": None
                    if self.available(action)
                    else f"{action.playbook} is not in the project yet",
                    "needs_stale_lock": action.needs_stale_lock,
                    "stages": list(action.stages),
                }
            )
        return out

    def validate(self, form: Mapping[str, str]) -> tuple[Action, dict[str, str], dict[str, Any]]:
        """(action, params, extravars) from a submitted form, or ActionRefused saying what is wrong."""
        name = form.get("action", "")
        action = BY_NAME.get(name)
        if action is None:
            raise ActionRefused(f"unknown action {name[:40]!r}: allowed are {', '.join(BY_NAME)}")
        if not self.available(action):
            raise ActionRefused(
                f"{action.label} is unavailable: {action.playbook} is not in the project", status=409
            )
        known = FORM_META | {f.name for f in action.fields}
        extra = sorted(set(form) - known)
        if extra:
            raise ActionRefused(
                f"{action.label} takes no field {', '.join(repr(e[:40]) for e in extra)}: "
                f"only {', '.join(f.name for f in action.fields) or 'none'}"
            )
        params: dict[str, str] = {}
        extravars: dict[str, Any] = {}
        for f in action.fields:
            # as sent, never trimmed: a value is exactly one of the allowed ones or it is refused
            value = form.get(f.name) or ""
            if f.kind == "release":
                self._check_release(value)
            elif value not in f.choices:
                raise ActionRefused(
                    f"{f.label.lower()} must be one of {', '.join(f.choices)}, not {value[:40]!r}"
                )
            params[f.name] = value
            extravars[f.var] = value
        extravars.update(action.fixed_vars)
        return action, params, extravars

    def _check_release(self, version: str) -> None:
        if not version:
            raise ActionRefused("choose a version to deploy")
        try:
            check_version(version, "version")
        except VersionError as exc:
            raise ActionRefused(str(exc)) from None
        releases = self.releases()
        if version not in releases:
            raise ActionRefused(
                f"version {version} is not in the release store {self.release_store} "
                f"(it has: {', '.join(releases) or 'nothing'}); "
                f"build it with `make release VERSION={version}`"
            )
