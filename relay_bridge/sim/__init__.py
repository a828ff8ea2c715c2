"""Simulation: a Twilio-like caller and example ConversationRelay apps, built on the same codecs in
the opposite role. Used by the demo, the tests and the benchmarks."""
