"""Serve the dashboard with waitress (streams SSE, one thread per open stream).

    python -m webui [--config webui.toml] [--host 127.0.0.1] [--port 8090] [--threads 16]

Every option also comes from the environment (BLUEGREEN_WEBUI_HOST, _PORT, _THREADS, _CONFIG, and
every other key of webui.config.DEFAULTS).
"""

from __future__ import annotations

import argparse
import logging
import sys

import waitress

from webui import config as webui_config
from webui import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webui", description="bluegreen dashboard")
    parser.add_argument("--config", help="TOML config file (also $BLUEGREEN_WEBUI_CONFIG)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8090)")
    parser.add_argument("--threads", type=int, help="worker threads (default 16)")
    parser.add_argument("--project-dir", help="repository whose playbooks run (default: this one)")
    parser.add_argument("--data-dir", help="runs database and runner files (default <project>/.lab/webui)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = webui_config.load(
            {
                "CONFIG_FILE": args.config,
                "HOST": args.host,
                "PORT": args.port,
                "THREADS": args.threads,
                "PROJECT_DIR": args.project_dir,
                "DATA_DIR": args.data_dir,
            }
        )
    except webui_config.ConfigError as exc:
        print(f"webui: {exc}", file=sys.stderr)
        return 2
    app = create_app(config)
    users = app.extensions["bluegreen"].users
    if not users.names():
        logging.getLogger("webui").warning(
            "no users in %s: add one with `python -m webui.users add NAME --role operator`",
            config["USERS_FILE"],
        )
    logging.getLogger("webui").info(
        "bluegreen dashboard on http://%s:%s (project %s)",
        config["HOST"],
        config["PORT"],
        config["PROJECT_DIR"],
    )
    waitress.serve(
        app,
        host=config["HOST"],
        port=config["PORT"],
        threads=config["THREADS"],
        ident="bluegreen-webui",
        # a quiet SSE stream still sends a keep-alive comment every SSE_HEARTBEAT seconds
        channel_timeout=max(120, int(config["SSE_HEARTBEAT"]) * 4),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
