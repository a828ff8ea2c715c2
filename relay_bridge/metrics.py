"""The process's metrics, in Prometheus conventions: base units (``_seconds``), counters ending in
``_total``, and no label that grows with calls (no call ids): labels take a few fixed values each.

One ``Metrics`` per process (the daemon's), on a registry of its own, so tests and the simulator can
have several. The server, its calls and the engines write to it; the admin listener serves it.
Counters that a label splits start at zero for every value the label can take, so a rate is
defined from the first scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from relay_bridge.conversation.events import EndReason

PREFIX = "relay_bridge_"
# Seconds: from a quick engine call (25 ms) to a turn that waited out the longest silence.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Why the server turns a connection away (MediaStreamsServer._refuse).
REFUSAL_CAUSES = ("pending", "bad_request", "path", "auth", "handshake", "start", "timeout", "draining", "capacity",
                  "load")
# The ConversationRelay error codes the bridge sends (protocols.md 2.7).
ERROR_CODES = (64101, 64105, 64107, 64108, 64112)
WORK = ("final", "speculative", "partial")  # recognition work by urgency (engines.schedule.Priority)


ERROR_REASON = "error"  # a call that ended on a failure of its own (no end reason)


def reason_label(reason: EndReason | None) -> str:
    return reason.name.lower() if reason is not None else ERROR_REASON


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()

        def seconds(name: str, doc: str, labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(f"{PREFIX}{name}_seconds", doc, labels, buckets=LATENCY_BUCKETS, registry=r)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=r)  # exported with "_total"

        self.calls_active = Gauge(PREFIX + "calls_active", "Calls in progress (admitted).", registry=r)
        self.calls = counter("calls", "Calls ended, by end reason.", ("reason",))
        self.refused = counter("connections_refused", "Connections and WebSocket upgrades turned away, by cause.",
                               ("cause",))
        self.end_of_speech_to_prompt = seconds(
            "end_of_speech_to_prompt", "From the end of the caller's speech to the final prompt sent to the app.")
        self.app_first_token = seconds(
            "app_first_token", "From a prompt to the app's first text token after it (the app's own latency).")
        self.first_token_to_audio = seconds(
            "first_token_to_audio", "From a reply's first text token to its first audio frame sent to the provider.")
        self.onset_to_clear = seconds(
            "onset_to_clear", "From the onset of caller speech over the agent to the clear that stops the agent.")
        self.asr_queue_wait = seconds(
            "asr_queue_wait", "Time recognition work (and end-of-turn decisions) waited for a recognition slot, "
            "by urgency; work given up while it waited counts to that moment.", ("work",))
        self.asr_decode = seconds("asr_decode", "Time one recognition took in its worker, by urgency.", ("work",))
        self.tts = seconds("tts_synthesis", "Time one chunk's synthesis took in its worker.")
        self.partials = counter("partial_prompts", "Partial prompts (last: false) sent to apps.")
        self.inbound_dropped = counter("inbound_frames_dropped", "Inbound media frames dropped: faster than real "
                                       "time, or not heard in time.")
        self.outbound_late = counter("outbound_frames_late", "Outbound frames of a reply sent after the frame "
                                     "before them had finished playing (a gap the caller hears).")
        self.app_connect_failures = counter("app_connect_failures", "Calls whose app could not be reached.")
        self.errors = counter("error_messages", "ConversationRelay error messages sent to apps, by code.", ("code",))
        for reason in (*EndReason, None):
            self.calls.labels(reason_label(reason))
        for cause in REFUSAL_CAUSES:
            self.refused.labels(cause)
        for code in ERROR_CODES:
            self.errors.labels(str(code))
        for work in WORK:
            self.asr_queue_wait.labels(work)
            self.asr_decode.labels(work)

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format."""
        return generate_latest(self.registry)
