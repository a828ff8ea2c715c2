# relay-bridge: `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SPEECH_DIR := .cache/speech

.PHONY: demo test test-fast test-wheel wheel fuzz bench bench-languages bench-asr bench-capacity bench-cost bench-turns soak lint speech-data clean

# The install. The end-of-turn model ships as a data file in pipecat-ai's wheel: that wheel is
# installed alone, without any of pipecat's dependencies (the bridge never imports it).
$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit("relay-bridge needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps 'pipecat-ai==1.14.0'
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/relay-bridge demo --out out

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m 'not models'

# The wheel to install on a voice host (docs/deployment.md), in dist/.
wheel: $(STAMP)
	rm -rf build dist && $(PY) -m pip wheel --no-deps --quiet --wheel-dir dist .
	@ls dist/*.whl

# The wheel as users install it: built, installed with its dependencies into a fresh virtual
# environment and run from outside the checkout (part of `make test` too). The dependencies are
# downloaded once into .cache/wheelhouse.
test-wheel: $(STAMP)
	$(PY) -m pytest -q -m wheel

# The fuzz suites (codecs, whole calls, config) with many more examples than `make test` runs, randomly
# chosen, round after round for FUZZ_MINUTES; the first failure stops it. Hypothesis prints how many
# examples each round ran. The counts per round are in each file (fuzz_settings in tests/harness.py).
FUZZ_MINUTES ?= 30
FUZZ_TESTS := tests/test_fuzz_codecs.py tests/test_fuzz_calls.py tests/test_fuzz_config.py
fuzz: $(STAMP)
	@end=$$(( $$(date +%s) + $(FUZZ_MINUTES) * 60 )); round=0; \
	while [ $$(date +%s) -lt $$end ]; do \
		round=$$((round + 1)); echo "fuzz round $$round"; \
		FUZZ=1 $(PY) -m pytest -q -p no:cacheprovider --hypothesis-show-statistics $(FUZZ_TESTS) || exit 1; \
	done; echo "fuzz: $$round round(s) in $(FUZZ_MINUTES) min, no failure"

# The recorded-speech set for benchmarks: Debian's Asterisk English prompts (8 kHz WAV) and their
# transcripts, unpacked into .cache/ without root.
speech-data: $(SPEECH_DIR)/.done
$(SPEECH_DIR)/.done:
	mkdir -p $(SPEECH_DIR)/debs
	cd $(SPEECH_DIR)/debs && apt-get download asterisk-core-sounds-en-wav asterisk-core-sounds-en
	for deb in $(SPEECH_DIR)/debs/*.deb; do dpkg-deb -x $$deb $(SPEECH_DIR)/root; done
	@touch $@

# The Spanish prompts (es_MX) and their transcripts, for the language benchmark.
$(SPEECH_DIR)/.done-es:
	mkdir -p $(SPEECH_DIR)/debs-es
	cd $(SPEECH_DIR)/debs-es && apt-get download asterisk-core-sounds-es-wav asterisk-core-sounds-es
	for deb in $(SPEECH_DIR)/debs-es/*.deb; do dpkg-deb -x $$deb $(SPEECH_DIR)/root; done
	@touch $@

bench-languages: $(STAMP) speech-data $(SPEECH_DIR)/.done-es
	$(PY) benchmarks/bench_languages.py --speech-dir $(SPEECH_DIR)/root --out out/bench-languages.json

# Recognition cost and WER by encoder window, beam and model over the whole recorded-speech set.
# About 45 minutes on two cores.
bench-asr: $(STAMP) speech-data $(SPEECH_DIR)/.done-es
	$(PY) benchmarks/bench_asr.py --speech-dir $(SPEECH_DIR)/root --modes tiny.en/en --windows 10 12 15 20 30 \
		--beams 1 5 --no-today --out out/bench-asr-tiny.json
	$(PY) benchmarks/bench_asr.py --speech-dir $(SPEECH_DIR)/root --modes base/en base/es --windows 12 15 30 \
		--beams 5 --no-today --detect-windows 12 30 --out out/bench-asr-base.json

# Concurrent conversational calls against the daemon, this checkout beside the last one without the
# recognition scheduler, 1 to 40 calls, 3 runs each (about an hour on two cores); then the media path
# alone with deterministic engines. Run it on an otherwise idle machine.
bench-capacity: $(STAMP) speech-data
	cd benchmarks && ../$(PY) bench_capacity.py --speech-dir ../$(SPEECH_DIR)/root --out ../out/bench-capacity.json
	cd benchmarks && ../$(PY) bench_capacity.py --speech-dir ../$(SPEECH_DIR)/root --media --reps 1 \
		--media-levels 25 50 75 100 --out ../out/bench-capacity-media.json

# When the caller's turn ends: the end-of-turn model against silence alone, on recorded utterances
# as recorded and with a mid-sentence pause stretched to 800 ms. About 15 minutes.
bench-turns: $(STAMP) speech-data
	cd benchmarks && ../$(PY) bench_turns.py --speech-dir ../$(SPEECH_DIR)/root --out ../out/bench-turns.json

# Engine CPU per conversational call, and so the most calls the cores could carry at all.
bench-cost: $(STAMP) speech-data
	cd benchmarks && ../$(PY) bench_cost.py --speech-dir ../$(SPEECH_DIR)/root --out ../out/bench-cost.json

# The daemon under load for an hour (20 simulated calls back to back); fails if RSS grows, descriptors
# leak or any call errs. Takes the full hour: run it on purpose.
soak: $(STAMP)
	$(PY) benchmarks/soak.py --out out/soak.json

bench: $(STAMP) speech-data
	$(PY) benchmarks/bench_calls.py --speech-dir $(SPEECH_DIR)/root --out out/bench.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .cache out dist build .pytest_cache .mypy_cache .ruff_cache
