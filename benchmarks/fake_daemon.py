"""The daemon with deterministic engines instead of models: the media path alone, for bench_capacity.

Usage: ``fake_daemon.py --listen HOST:PORT --app-url URL --config FILE``. Everything but the engines
is the real daemon (``relay_bridge.daemon.run``): server, calls, pacing, codecs. The fake recogniser answers
at once; the fake voice renders a tone at 16 kHz, so resampling to 8 kHz still runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from relay_bridge import logs
from relay_bridge.call.engines import SpeechEngines
from relay_bridge.config import load, replace
from relay_bridge.daemon import run
from relay_bridge.engines.fake import FakeSynthesizer, FakeTranscriber

MS_PER_CHAR = 60.0  # about Piper's speaking rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--app-url", required=True)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    cfg = replace(load(args.config), server__listen=args.listen, server__app_url=args.app_url)
    logs.configure(cfg.logging.level)
    engines = SpeechEngines(FakeTranscriber(), FakeSynthesizer(ms_per_char=MS_PER_CHAR),
                            asr_concurrency=cfg.asr.decodes, tts_concurrency=cfg.tts.concurrency,
                            language=cfg.session.language)
    trio.run(run, cfg, engines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
