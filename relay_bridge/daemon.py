"""The relay-bridge daemon: load the engines once, serve Media Streams, stop gracefully on SIGTERM.

The admin listener (``server.admin_listen``: /metrics, /healthz, /readyz) opens first, so a probe
sees the process alive but not ready while the models load (in a worker thread); the media port
opens once they are loaded."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import trio

from relay_bridge.admin import Admin, serve_admin
from relay_bridge.call.engines import (
    LanguageEngines,
    SpeechEngines,
    built_at_engine_priority,
    single_threaded_blas,
    wait_engines_idle,
)
from relay_bridge.config import TURN_CHOICE, Config, ModelChoice, find_models
from relay_bridge.engines.models import DEFAULT_CACHE, ModelError, Resolved
from relay_bridge.engines.piper import PiperSynthesizer
from relay_bridge.engines.turn import TurnModel
from relay_bridge.engines.whisper import WhisperTranscriber
from relay_bridge.metrics import Metrics
from relay_bridge.server import MediaStreamsServer, serve_media_streams
from relay_bridge.settings import split_listen

logger = logging.getLogger(__name__)

ENGINE_EXIT_WAIT_S = 10.0


def model_cache_dir() -> Path:
    """Where assembled and downloaded models go: systemd's CacheDirectory= when set, else ~/.cache."""
    systemd_cache = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return Path(systemd_cache) / "models" if systemd_cache else DEFAULT_CACHE


def load_engines(cfg: Config, metrics: Metrics | None = None) -> SpeechEngines:
    """Resolve and verify, then load and warm up, the models of every declared language (once per process).

    No model loads until all are found and verified: a ``ModelError`` lists each that cannot be used,
    naming its config key. Languages that name the same model or voice share one loaded instance.
    """
    single_threaded_blas()
    models = find_models(cfg, model_cache_dir())
    if models.errors:
        raise ModelError("\n".join(models.errors))
    for warning in models.warnings:
        logger.warning("%s", warning)
    transcribers: dict[Path, WhisperTranscriber] = {}
    synthesizers: dict[Path, PiperSynthesizer] = {}
    settings = cfg.asr.whisper()

    def transcriber(choice: ModelChoice) -> WhisperTranscriber:
        asr = models.found[choice]
        if asr.path not in transcribers:
            t0 = time.perf_counter()
            with loading(choice.key, asr.path):
                # CTranslate2 starts its decode threads as the model loads: they take the loader's priority.
                transcribers[asr.path] = t = built_at_engine_priority(partial(WhisperTranscriber, asr.path, settings))
                t.warm_up()
            logger.info("ASR %s from %s (%s) ready in %.2f s", choice.name, asr.path, asr.source,
                        time.perf_counter() - t0)
        return transcribers[asr.path]

    def synthesizer(choice: ModelChoice) -> PiperSynthesizer:
        tts = models.found[choice]
        if tts.path not in synthesizers:
            t0 = time.perf_counter()
            with loading(choice.key, tts.path):
                synthesizers[tts.path] = s = PiperSynthesizer(tts.path, threads=cfg.tts.cpu_threads)
                s.warm_up()
            logger.info("TTS %s from %s (%s) ready in %.2f s", choice.name, tts.path, tts.source,
                        time.perf_counter() - t0)
        return synthesizers[tts.path]

    declared = []
    for lang in cfg.languages:
        engines = LanguageEngines(lang.code, transcriber(cfg.speech_model(lang)), synthesizer(cfg.voice(lang)))
        logger.info("language %s: speech model %s, voice %s", lang.code, cfg.speech_model(lang).name,
                    cfg.voice(lang).name)
        declared.append(engines)
    default = next(x for x in declared if x.code.lower() == cfg.session.language.lower())
    return SpeechEngines(default.transcriber, default.synthesizer, asr_concurrency=cfg.asr.decodes,
                         tts_concurrency=cfg.tts.syntheses, language=default.code,
                         more_languages=tuple(x for x in declared if x is not default),
                         turn_model=load_turn_model(models.found.get(TURN_CHOICE)),
                         metrics=metrics or Metrics())


def load_turn_model(found: Resolved | None) -> TurnModel | None:
    """The end-of-turn model, when ``vad.turn_detection`` is "smart" and it was found; without it, turns
    end on silence."""
    if found is None:
        return None
    t0 = time.perf_counter()
    with loading(TURN_CHOICE.key, found.path):
        model = built_at_engine_priority(partial(TurnModel, found.path))
        model.warm_up()
    logger.info("end-of-turn model %s from %s (%s) ready in %.2f s", TURN_CHOICE.name, found.path, found.source,
                time.perf_counter() - t0)
    return model


@contextmanager
def loading(key: str, path: Path) -> Iterator[None]:
    """Whatever an engine raises as it loads a damaged model, as a ``ModelError`` naming the config key."""
    try:
        yield
    except Exception as exc:  # each native runtime has its own exceptions (ONNX Runtime's derive from Exception)
        raise ModelError(f"{key}: cannot load {path}: {exc}") from exc


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)  # a supervisor that reads slowly must never stall the event loop
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as exc:  # BlockingIOError included: that one message is dropped
            logger.warning("could not notify systemd: %s", exc)


STATUS_INTERVAL_S = 5.0  # how often STATUS= is refreshed when systemd asks for no watchdog


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of the unit's WatchdogSec ($WATCHDOG_USEC), when systemd set it for this process; else None."""
    environ = os.environ if environ is None else environ
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


async def notify_systemd(server: MediaStreamsServer, shutdown: trio.Event, interval: float | None,
                         notify: Callable[[str], None] = sd_notify) -> None:
    """Tell systemd the calls in progress (``STATUS=``) and, with a watchdog, that the event loop is
    alive (``WATCHDOG=1``, every ``interval``): this runs on the event loop, so a stuck loop stops the
    pings and systemd restarts the daemon. Ends once a shutdown has drained every call."""
    while True:
        status = f"STATUS={server.active_calls} call(s) in progress, {server.calls_total} since start"
        if shutdown.is_set():
            status += "; draining"
        notify(status if interval is None else f"WATCHDOG=1\n{status}")
        with trio.move_on_after(interval or STATUS_INTERVAL_S):
            await shutdown.wait()
            await server.wait_idle()
            return


async def run(cfg: Config, engines: SpeechEngines | None = None) -> None:
    """Serve until SIGTERM or SIGINT has drained the calls; ``engines`` None: load them here."""
    metrics = engines.metrics if engines is not None else Metrics()
    admin = Admin(metrics)
    async with trio.open_nursery() as nursery:
        if cfg.server.admin_listen:
            admin_listeners = await listen("server.admin_listen", cfg.server.admin_listen)
            await nursery.start(serve_admin, admin, admin_listeners)
            bound = admin_listeners[0].socket.getsockname()
            logger.info("admin endpoints on http://%s:%d/ (metrics, healthz, readyz)", bound[0], bound[1])
        if engines is None:
            engines = await trio.to_thread.run_sync(load_engines, cfg, metrics)
        await serve_calls(cfg, engines, admin)
        nursery.cancel_scope.cancel()


class StartupError(RuntimeError):
    """A start-up failure the operator must fix, such as a port in use: one line, exit status 2."""


async def listen(key: str, address: str) -> list[trio.SocketListener]:
    host, port = split_listen(address)
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise StartupError(f"{key}: cannot listen on {address}: {exc.strerror or exc}") from None


async def serve_calls(cfg: Config, engines: SpeechEngines, admin: Admin) -> None:
    listeners = await listen("server.listen", cfg.server.listen)
    server = MediaStreamsServer(cfg.server, cfg.call, engines)
    shutdown = trio.Event()
    # Signals are taken before READY=1: a supervisor may stop the daemon as soon as it is ready.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_media_streams, server, listeners, shutdown)
            admin.server = server
            bound = listeners[0].socket.getsockname()
            logger.info("listening on ws://%s:%d/media; app %s", bound[0], bound[1], cfg.server.app_url or "(none)")
            sd_notify("READY=1")
            nursery.start_soon(notify_systemd, server, shutdown, watchdog_interval())
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    log_statistics(server)
                    continue
                logger.info("%s received: no new calls; draining", signal.Signals(signum).name)
                sd_notify("STOPPING=1")
                shutdown.set()
                break
    logger.info("stopped after %d call(s)", server.calls_total)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def task_count() -> int:
    """Live trio tasks in this run (walked from the root task)."""
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    root = trio.lowlevel.current_root_task()
    return walk(root) if root is not None else 0


def log_statistics(server: MediaStreamsServer) -> None:
    """One line an operator (or the soak benchmark) can ask for with SIGUSR1."""
    refused = " ".join(f"{cause}={n}" for cause, n in sorted(server.refused.items())) or "none"
    logger.info("stats: tasks=%d py_blocks=%d active_calls=%d pending=%d calls_total=%d refused: %s", task_count(),
                sys.getallocatedblocks(), server.active_calls, server.pending, server.calls_total, refused)


def serve(cfg: Config) -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # a statistics request while the models load is not fatal
    try:
        trio.run(run, cfg)
    except BaseExceptionGroup as group:  # one failure in the nursery (a model that will not load): itself
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise
    finally:
        # Recognitions abandoned by ended calls may still be running in worker threads; the process
        # must not exit under them (the native runtime aborts when its threads are torn down).
        if not wait_engines_idle(ENGINE_EXIT_WAIT_S):
            logger.warning("engine work still running after %.0f s; exiting anyway", ENGINE_EXIT_WAIT_S)


def default_config_path() -> Path | None:
    """$RELAY_BRIDGE_CONFIG (which must exist), else /etc/relay-bridge/relay-bridge.toml if present."""
    named = os.environ.get("RELAY_BRIDGE_CONFIG")
    if named:
        return Path(named)  # a missing file is reported by config.load
    p = Path("/etc/relay-bridge/relay-bridge.toml")
    return p if p.is_file() else None
