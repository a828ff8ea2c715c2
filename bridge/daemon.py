"""The relay-bridge daemon: load the engines once, serve Media Streams, stop gracefully on SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path

import trio

from bridge.call.engines import SpeechEngines
from bridge.config import Config
from bridge.engines.models import resolve
from bridge.engines.piper import PiperSynthesizer
from bridge.engines.whisper import WhisperSettings, WhisperTranscriber
from bridge.server import MediaStreamsServer, serve_media_streams, split_listen

logger = logging.getLogger(__name__)


def load_engines(cfg: Config) -> SpeechEngines:
    """Resolve, verify, load and warm up the ASR and TTS models (once per process)."""
    t0 = time.perf_counter()
    asr = resolve(cfg.asr.model, "asr", explicit=cfg.asr.model_dir, allow_download=cfg.asr.allow_download)
    transcriber = WhisperTranscriber(asr.path, WhisperSettings(
        beam_size=cfg.asr.beam_size, compute_type=cfg.asr.compute_type, device=cfg.asr.device,
        cpu_threads=cfg.asr.cpu_threads, hints=cfg.asr.hints))
    transcriber.warm_up()
    t1 = time.perf_counter()
    logger.info("ASR %s from %s (%s) ready in %.2f s", cfg.asr.model, asr.path, asr.source, t1 - t0)
    tts = resolve(cfg.tts.voice, "tts", explicit=cfg.tts.model_path, allow_download=cfg.tts.allow_download)
    model_path = tts.path / f"{cfg.tts.voice}.onnx" if tts.path.is_dir() else tts.path
    synthesizer = PiperSynthesizer(model_path)
    synthesizer.warm_up()
    logger.info("TTS %s from %s (%s) ready in %.2f s", cfg.tts.voice, model_path, tts.source,
                time.perf_counter() - t1)
    return SpeechEngines(transcriber, synthesizer, asr_concurrency=cfg.asr.concurrency,
                         tts_concurrency=cfg.tts.concurrency)


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as exc:
            logger.warning("could not notify systemd: %s", exc)


async def run(cfg: Config, engines: SpeechEngines) -> None:
    host, port = split_listen(cfg.server.listen)
    listeners = await trio.open_tcp_listeners(port, host=host)
    server = MediaStreamsServer(cfg.server, cfg.call, engines)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_media_streams, server, listeners, shutdown)
        bound = listeners[0].socket.getsockname()
        logger.info("listening on ws://%s:%d/media; app %s", bound[0], bound[1], cfg.server.app_url or "(none)")
        sd_notify("READY=1")
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                logger.info("%s received: no new calls; draining", signal.Signals(signum).name)
                sd_notify("STOPPING=1")
                shutdown.set()
                break
    logger.info("stopped after %d call(s)", server.calls_total)


def serve(cfg: Config) -> None:
    engines = load_engines(cfg)
    trio.run(run, cfg, engines)


def default_config_path() -> Path | None:
    """$RELAY_BRIDGE_CONFIG (which must exist), else /etc/relay-bridge/relay-bridge.toml if present."""
    named = os.environ.get("RELAY_BRIDGE_CONFIG")
    if named:
        return Path(named)  # a missing file is reported by config.load
    p = Path("/etc/relay-bridge/relay-bridge.toml")
    return p if p.is_file() else None
