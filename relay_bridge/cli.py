"""Command line: ``relay-bridge serve`` (the daemon), ``relay-bridge check`` and ``relay-bridge demo``.

The help texts below are the manual: each command's synopsis, options with their config keys, the
files and environment variables it reads, and its exit statuses.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from relay_bridge import __version__, logs
from relay_bridge.config import TURN_CHOICE, Config, ConfigError, check_authentication, find_models, load
from relay_bridge.engines.models import ModelError, Resolved

logger = logging.getLogger("relay_bridge.cli")

USAGE = """relay-bridge serve [--listen HOST:PORT] [--app-url URL] [--config FILE] [--log-level LEVEL]
       relay-bridge check [--config FILE]
       relay-bridge demo [--config FILE] [--out DIR] [--log-level LEVEL]
       relay-bridge --version"""

DESCRIPTION = """\
relay-bridge is a self-hosted Twilio ConversationRelay. A telephony provider (Twilio, or Telnyx)
streams each call's audio to it over Media Streams; it recognises the caller's speech with
faster-whisper, speaks with Piper, and talks the ConversationRelay protocol to your application's
WebSocket, so an application written for Twilio's hosted ConversationRelay works unchanged. The
speech models are installed Python packages; nothing is fetched from a model hub unless the config
allows it."""

SERVE_DESCRIPTION = """\
Run the bridge daemon: load the config and the speech models of every declared language, then
accept Media Streams WebSocket connections on server.listen (path /media) and open one
ConversationRelay session to the application for each call. SIGTERM or SIGINT stops new calls and
drains those in progress (at most server.shutdown_grace_s); SIGUSR1 logs one line of statistics.
Logs go to stderr (to the journal's priorities under systemd). Under systemd (Type=notify) it
reports READY=1 once it listens, and STATUS= and WATCHDOG=1 while it runs. server.admin_listen
(default 127.0.0.1:9464) serves /metrics (Prometheus), /healthz and /readyz over plain HTTP."""

CHECK_DESCRIPTION = """\
Check the config file that serve would use, and every model it names, without starting the server
or loading any model into its engine: every config error is listed at once, each naming the file
and the dotted key; then each language's speech model and voice, and the end-of-turn model when
vad.turn_detection is "smart", is found, checked against the model manifest (size and sha256) or,
for a path, checked to be a CTranslate2 model folder or a Piper voice with its .onnx.json, and
listed with where it was found. As serve, it assembles models split across packages into the model
cache, and downloads those that asr.allow_download or tts.allow_download allow."""

DEMO_DESCRIPTION = """\
Run one simulated phone call on loopback with the real models: a simulated caller speaks recorded
speech, talks over the agent once and presses a key; an example application answers. A timeline
and the latency of each step are printed, and the call is written as a stereo WAV."""

CONFIG_FILES = """\
files:
  /etc/relay-bridge/relay-bridge.toml
        the config file when neither --config nor $RELAY_BRIDGE_CONFIG names one; without any,
        the built-in defaults (every key is documented in config/relay-bridge.toml)"""

MODEL_FILES = """\
  ~/.cache/relay-bridge/models, or $CACHE_DIRECTORY/models under systemd
        where models split across packages are assembled, and downloaded models are kept"""

ENVIRONMENT = """\
environment:
  RELAY_BRIDGE_CONFIG
        the config file when --config is not given (it must exist)
  RELAY_BRIDGE_TWILIO_AUTH_TOKEN, RELAY_BRIDGE_TELNYX_STREAM_TOKEN
        server.twilio_auth_token and server.telnyx_stream_token, when the config sets neither
        the key nor its *_file key
  CREDENTIALS_DIRECTORY
        systemd credentials (LoadCredential=twilio_auth_token:FILE, telnyx_stream_token): a
        secret the config and the environment do not give is read from the file of its name"""

DAEMON_ENVIRONMENT = """\
  NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID
        systemd's notification socket and watchdog (Type=notify, WatchdogSec=)"""

EXIT_STATUS = """\
exit status:
  0     {ok}
  2     a config, model or start-up error, or a usage error: the reason is on stderr, one line
        for each problem, as "relay-bridge: ..."
  130   interrupted (SIGINT){interrupted}"""

SERVE_INTERRUPTED = " while the models load, before serving"
CONFIG_OPTION = "the TOML config file (default: $RELAY_BRIDGE_CONFIG, else /etc/relay-bridge/relay-bridge.toml)"


def epilog(*sections: str) -> str:
    return "\n\n".join(sections)


def parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    files = CONFIG_FILES + "\n" + MODEL_FILES
    top = argparse.ArgumentParser(
        prog="relay-bridge", usage=USAGE, description=DESCRIPTION, formatter_class=raw,
        epilog=epilog("Run relay-bridge COMMAND --help for a command's options.", files,
                      ENVIRONMENT + "\n" + DAEMON_ENVIRONMENT,
                      EXIT_STATUS.format(ok="success (serve: stopped by SIGTERM or SIGINT after draining its calls)",
                                         interrupted=SERVE_INTERRUPTED)))
    top.add_argument("--version", action="version", version=f"relay-bridge {__version__}")
    sub = top.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    def command(name: str, summary: str, description: str, *sections: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, prog=f"relay-bridge {name}", help=summary, description=description,
                              formatter_class=raw, epilog=epilog(*sections))

    serve = command("serve", "run the bridge daemon", SERVE_DESCRIPTION, files,
                    ENVIRONMENT + "\n" + DAEMON_ENVIRONMENT,
                    EXIT_STATUS.format(ok="stopped by SIGTERM or SIGINT after draining its calls",
                                       interrupted=SERVE_INTERRUPTED))
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="where to accept Media Streams (server.listen; default 127.0.0.1:8080)")
    serve.add_argument("--app-url", metavar="URL",
                       help="the ConversationRelay app's ws:// or wss:// URL (server.app_url)")
    serve.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_OPTION)
    serve.add_argument("--log-level", metavar="LEVEL",
                       help="DEBUG, INFO, WARNING or ERROR (logging.level; default INFO)")
    check = command("check", "check the config and the models it names, then exit", CHECK_DESCRIPTION, files,
                    ENVIRONMENT, EXIT_STATUS.format(ok="the config and its models are usable", interrupted=""))
    check.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_OPTION)
    demo = command("demo", "run a simulated call on loopback with the real models", DEMO_DESCRIPTION,
                   EXIT_STATUS.format(ok="the call ran", interrupted=""))
    demo.add_argument("--config", type=Path, metavar="FILE", help="a TOML config file (default: the built-in defaults)")
    demo.add_argument("--out", type=Path, default=Path("out"), metavar="DIR",
                      help="where to write the call WAV (default: out/)")
    demo.add_argument("--log-level", default="WARNING", metavar="LEVEL",
                      help="DEBUG, INFO, WARNING or ERROR (default WARNING)")
    return top


def complain(lines: Iterable[str]) -> None:
    """Each of ``lines`` on stderr as ``relay-bridge: ...``, after what was printed before. Under the
    journal each carries its priority (an error's, or a warning's for "warning: ..."), so that
    ``journalctl -p warning`` shows why the daemon did not start."""
    sys.stdout.flush()
    journal = logs.stderr_is_journal()
    for line in lines:
        prefix = f"<{logs.priority(logging.WARNING if line.startswith('warning: ') else logging.ERROR)}>"
        print(f"{prefix if journal else ''}relay-bridge: {line}", file=sys.stderr, flush=True)


def fail(exc: Exception) -> int:
    """``exc``, one line for each of its problems, on stderr; the exit status 2."""
    complain(str(exc).splitlines())
    return 2


def errors(n: int) -> str:
    return f"{n} error{'s' if n > 1 else ''}"


def startup_warnings(cfg: Config) -> list[str]:
    """What serve warns about as it starts."""
    warnings = []
    if cfg.server.credentials.open:
        warnings.append(f"calls are not authenticated (server.allow_unauthenticated): anyone who can reach "
                        f"{cfg.server.listen} can open calls; set server.twilio_auth_token or "
                        "server.telnyx_stream_token")
    if not cfg.server.app_url:
        warnings.append("no app URL configured: every call will be ended at once until --app-url "
                        "or server.app_url is set")
    return warnings


def check(given: Path | None) -> int:
    """``relay-bridge check``: every config error, then every model, as serve would find them."""
    from relay_bridge.daemon import default_config_path, model_cache_dir

    path = given or default_config_path()
    print(f"config: {config_origin(given, path)}")
    try:
        cfg = load(path)
    except ConfigError as exc:
        complain([*exc.messages, f"{errors(len(exc.messages))} in the config; the models are checked once it loads"])
        return 2
    problems: list[str] = []
    try:
        check_authentication(cfg)
    except ConfigError as exc:
        problems += exc.messages
    models = find_models(cfg, model_cache_dir())
    problems += models.errors
    complain([*problems, *(f"warning: {line}" for line in (*startup_warnings(cfg), *models.warnings))])

    def show(what: str, found: Resolved | None) -> None:
        if found is not None:
            print(f"{what}: {found.path} ({found.source})")

    for lang in cfg.languages:
        for what, choice in (("speech model", cfg.speech_model(lang)), ("voice", cfg.voice(lang))):
            show(f"{lang.code} {what} {choice.name} [{choice.key}]", models.found.get(choice))
    if cfg.vad.turn_detection == "smart":
        show(f"end-of-turn model {TURN_CHOICE.name} [{TURN_CHOICE.key}]", models.found.get(TURN_CHOICE))
    if problems:
        complain([f"{errors(len(problems))}: serve would not start"])
        return 2
    print("ok: the config and every model it names are good (the ports are tried only by serve)")
    return 0


def config_origin(given: Path | None, used: Path | None) -> str:
    """Which config file serve runs on (and check checks), and why that one."""
    if given is not None:
        return f"{given} (--config)"
    if used is None:
        return ("no file: the built-in defaults ($RELAY_BRIDGE_CONFIG is unset, "
                "/etc/relay-bridge/relay-bridge.toml absent)")
    if os.environ.get("RELAY_BRIDGE_CONFIG"):
        return f"{used} ($RELAY_BRIDGE_CONFIG)"
    return f"{used} (the default location)"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    try:
        if args.command == "check":
            return check(args.config)
        if args.command == "serve":
            from relay_bridge.daemon import StartupError, default_config_path
            from relay_bridge.daemon import serve as run_serve

            path = args.config or default_config_path()
            cfg = load(path, server__listen=args.listen, server__app_url=args.app_url, logging__level=args.log_level)
            check_authentication(cfg)
            logs.configure(cfg.logging.level, log_transcripts=cfg.logging.log_transcripts, form=cfg.logging.format)
            logger.info("config: %s", config_origin(args.config, path))
            for warning in startup_warnings(cfg):
                logger.warning("%s", warning)
            try:
                run_serve(cfg)
            except StartupError as exc:
                return fail(exc)
            return 0
        from relay_bridge.demo import main as run_demo

        cfg = load(args.config)
        logs.configure(args.log_level, log_transcripts=cfg.logging.log_transcripts)
        return run_demo(cfg, args.out)
    except (ConfigError, ModelError) as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
