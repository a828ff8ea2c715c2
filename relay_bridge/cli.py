"""Command line: ``relay-bridge serve`` (the daemon) and ``relay-bridge demo``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from relay_bridge import __version__, logs
from relay_bridge.config import ConfigError, check_authentication, load
from relay_bridge.engines.models import ModelError

logger = logging.getLogger("relay_bridge.cli")


def config_origin(given: Path | None, used: Path | None) -> str:
    """Which config file the daemon runs on, and why that one, for its first log line."""
    if given is not None:
        return f"{given} (--config)"
    if used is None:
        return ("no file: the built-in defaults ($RELAY_BRIDGE_CONFIG is unset, "
                "/etc/relay-bridge/relay-bridge.toml absent)")
    if os.environ.get("RELAY_BRIDGE_CONFIG"):
        return f"{used} ($RELAY_BRIDGE_CONFIG)"
    return f"{used} (the default location)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay-bridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"relay-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bridge daemon")
    serve.add_argument("--listen", metavar="HOST:PORT", help="where to accept Media Streams (server.listen)")
    serve.add_argument("--app-url", metavar="URL",
                       help="the ConversationRelay app's ws:// or wss:// URL (server.app_url)")
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (logging.level)")
    demo = sub.add_parser("demo", help="run a simulated call on loopback with the real models")
    demo.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    demo.add_argument("--out", type=Path, default=Path("out"), help="where to write the call WAV (default: out/)")
    demo.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)

    try:
        if args.command == "serve":
            from relay_bridge.daemon import default_config_path
            from relay_bridge.daemon import serve as run_serve

            path = args.config or default_config_path()
            cfg = load(path, server__listen=args.listen, server__app_url=args.app_url, logging__level=args.log_level)
            check_authentication(cfg)
            logs.configure(cfg.logging.level, log_transcripts=cfg.logging.log_transcripts)
            logger.info("config: %s", config_origin(args.config, path))
            if cfg.server.credentials.open:
                logger.warning("calls are not authenticated (server.allow_unauthenticated): anyone who can reach "
                               "%s can open calls; set server.twilio_auth_token or server.telnyx_stream_token",
                               cfg.server.listen)
            if not cfg.server.app_url:
                logger.warning("no app URL configured: every call will be ended at once until --app-url "
                               "or server.app_url is set")
            run_serve(cfg)
            return 0
        from relay_bridge.demo import main as run_demo

        cfg = load(args.config)
        logs.configure(args.log_level, log_transcripts=cfg.logging.log_transcripts)
        return run_demo(cfg, args.out)
    except (ConfigError, ModelError) as exc:
        print(f"relay-bridge: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
