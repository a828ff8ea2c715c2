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
        self.calls_active = Gauge(PREFIX + "calls_active", "Calls in progress (admitted).", registry=r)
        self.calls = Counter(PREFIX + "calls", "Calls ended, by end reason.", ["reason"], registry=r)
        self.refused = Counter(PREFIX + "connections_refused", "Connections and WebSocket upgrades turned away, "
                               "by cause.", ["cause"], registry=r)
        self.end_of_speech_to_prompt = Histogram(
            PREFIX + "end_of_speech_to_prompt_seconds", "From the end of the caller's speech to the final prompt "
            "sent to the app.", buckets=LATENCY_BUCKETS, registry=r)
        self.app_first_token = Histogram(
            PREFIX + "app_first_token_seconds", "From a prompt to the app's first text token after it (the app's "
            "own latency).", buckets=LATENCY_BUCKETS, registry=r)
        self.first_token_to_audio = Histogram(
            PREFIX + "first_token_to_audio_seconds", "From a reply's first text token to its first audio frame "
            "sent to the provider.", buckets=LATENCY_BUCKETS, registry=r)
        self.onset_to_clear = Histogram(
            PREFIX + "onset_to_clear_seconds", "From the onset of caller speech over the agent to the clear that "
            "stops the agent.", buckets=LATENCY_BUCKETS, registry=r)
        self.asr_queue_wait = Histogram(
            PREFIX + "asr_queue_wait_seconds", "Time recognition work (and end-of-turn decisions) waited for a "
            "recognition slot, by urgency; work given up while it waited counts to that moment.",
            ["work"], buckets=LATENCY_BUCKETS, registry=r)
        self.asr_decode = Histogram(
            PREFIX + "asr_decode_seconds", "Time one recognition took in its worker, by urgency.", ["work"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.tts = Histogram(PREFIX + "tts_synthesis_seconds", "Time one chunk's synthesis took in its worker.",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.partials = Counter(PREFIX + "partial_prompts", "Partial prompts (last: false) sent to apps.",
                                registry=r)
        self.inbound_dropped = Counter(PREFIX + "inbound_frames_dropped", "Inbound media frames dropped: faster "
                                       "than real time, or not heard in time.", registry=r)
        self.outbound_late = Counter(PREFIX + "outbound_frames_late", "Outbound frames of a reply sent after the "
                                     "frame before them had finished playing (a gap the caller hears).", registry=r)
        self.app_connect_failures = Counter(PREFIX + "app_connect_failures", "Calls whose app could not be "
                                            "reached.", registry=r)
        self.errors = Counter(PREFIX + "error_messages", "ConversationRelay error messages sent to apps, by "
                              "code.", ["code"], registry=r)
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
