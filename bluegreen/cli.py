"""`bluegreen` — the operator's command line. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing add_arguments(parser) and run(args) -> exit code
SUBCOMMANDS = {
    "release": ("bluegreen.release", "build a logplatform release into the release store"),
    "loadgen": ("bluegreen.loadgen", "send steady, sequence-numbered log traffic and record every ack"),
    "verify": ("bluegreen.verify", "check every acked entry is in a sink: lost, duplicates, by color"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bluegreen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    args = parser.parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
