"""Dashboard users: a JSON file of names, roles and password hashes, and the CLI that edits it.

    python -m webui.users add NAME --role operator     # password from $BLUEGREEN_WEBUI_PASSWORD or a prompt
    python -m webui.users list
    python -m webui.users remove NAME

File format (written atomically, mode 0600; a missing folder is created 0700):
    {"users": {"alice": {"role": "operator", "password_hash": "scrypt:...", "created_at": "..."}}}
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import getpass
import hashlib
import json
import os
import re
import secrets
import sys
import threading
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from webui import config as webui_config
from webui.files import atomic_write_json

ROLES = ("viewer", "operator")
NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
PASSWORD_ENV = "BLUEGREEN_WEBUI_PASSWORD"  # noqa: S105 (the variable's name, not a password)
MIN_PASSWORD = 8


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user does not exist, so a wrong name costs as long as a wrong password."""
    return generate_password_hash(secrets.token_hex(16))


class UserError(Exception):
    """The users file or a user cannot be used as asked; the message says why."""


class UserStore:
    """The users file, re-read when it changes (a role change or removal applies on the next request)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: tuple[float, dict] | None = None

    def _load(self) -> dict:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        with self._lock:
            if self._cache and self._cache[0] == mtime:
                return self._cache[1]
            try:
                users = json.loads(self.path.read_text()).get("users", {})
            except (OSError, ValueError, AttributeError) as exc:
                raise UserError(f"cannot read users file {self.path}: {exc}") from exc
            self._cache = (mtime, users)
            return users

    def get(self, name: str) -> dict | None:
        """The user's record ({"name", "role"}), or None."""
        record = self._load().get(name)
        if not isinstance(record, dict) or record.get("role") not in ROLES:
            return None
        return {"name": name, "role": record["role"]}

    def password_stamp(self, name: str) -> str | None:
        """A short digest of the user's password hash (None: no such user). A password change (or any
        `add --replace`: the hash has a new salt) changes it, which ends the user's sessions."""
        record = self._load().get(name)
        stored = record.get("password_hash") if isinstance(record, dict) else None
        if not isinstance(stored, str):
            return None
        return hashlib.sha256(stored.encode()).hexdigest()[:16]

    def authenticate(self, name: str, password: str) -> dict | None:
        record = self._load().get(name) if NAME_PATTERN.match(name or "") else None
        stored = record.get("password_hash") if isinstance(record, dict) else None
        ok = check_password_hash(stored or _dummy_hash(), password or "")
        if not (ok and stored):
            return None
        return self.get(name)

    def names(self) -> dict[str, str]:
        return {name: rec.get("role", "?") for name, rec in sorted(self._load().items())}

    def add(self, name: str, role: str, password: str, replace: bool = False) -> None:
        if not NAME_PATTERN.match(name):
            raise UserError(f"invalid user name {name!r}: lower-case letters, digits, _ . - (max 32)")
        if role not in ROLES:
            raise UserError(f"invalid role {role!r}: one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
        users = dict(self._load())
        if name in users and not replace:
            raise UserError(f"user {name} exists (use --replace to change the role or password)")
        old = users.get(name) if isinstance(users.get(name), dict) else {}
        old_hash = old.get("password_hash")
        # the same password keeps its hash, so a role change alone does not end the user's sessions
        same = isinstance(old_hash, str) and check_password_hash(old_hash, password)
        users[name] = {
            "role": role,
            "password_hash": old_hash if same else generate_password_hash(password),
            "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        atomic_write_json(self.path, {"users": users})

    def remove(self, name: str) -> None:
        users = dict(self._load())
        if name not in users:
            raise UserError(f"no user {name}")
        del users[name]
        atomic_write_json(self.path, {"users": users})


def _password(args: argparse.Namespace) -> str:
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise UserError(f"no terminal to ask for the password: set {PASSWORD_ENV}")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the passwords differ")
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webui.users", description="Manage dashboard users.")
    parser.add_argument(
        "--users-file",
        type=Path,
        help="users file (default: the dashboard's USERS_FILE, from $BLUEGREEN_WEBUI_* or the config file)",
    )
    parser.add_argument("--config", help="dashboard config file (TOML) to take USERS_FILE from")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help=f"add a user (password from ${PASSWORD_ENV} or a prompt)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="viewer")
    add.add_argument("--replace", action="store_true", help="replace an existing user's role and password")
    commands.add_parser("list", help="list users and roles")
    remove = commands.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    args = parser.parse_args(argv)

    try:
        path = args.users_file or Path(webui_config.load({"CONFIG_FILE": args.config})["USERS_FILE"])
        store = UserStore(path)
        if args.command == "add":
            store.add(args.name, args.role, _password(args), replace=args.replace)
            print(f"user {args.name} ({args.role}) saved in {path}")
        elif args.command == "remove":
            store.remove(args.name)
            print(f"user {args.name} removed from {path}")
        else:
            for name, role in store.names().items():
                print(f"{name}\t{role}")
    except (UserError, webui_config.ConfigError) as exc:
        print(f"webui.users: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
