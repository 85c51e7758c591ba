"""`bluegreen` — the operator's command line. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module exposing add_arguments(parser) and run(args) -> exit code, one-line help)
SUBCOMMANDS = {
    "release": ("bluegreen.release", "build a logplatform release into the release store"),
    "loadgen": ("bluegreen.loadgen", "send steady, sequence-numbered log traffic and record every ack"),
    "verify": ("bluegreen.verify", "check every acked entry is in a sink: lost, duplicates, by color"),
    "lab": (
        "bluegreen.sshlab",
        "the SSH lab: load balancers and nodes as hosts over SSH (up, down, status, exec)",
    ),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bluegreen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in SUBCOMMANDS:
        # unknown or missing command: argparse prints usage with the list of commands
        _top_parser().parse_args(argv)
        return 2
    # Only the chosen subcommand's module is imported, so `bluegreen release` never pays for aiohttp.
    module_name, help_text = SUBCOMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"bluegreen {argv[0]}", description=module.__doc__ or help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
