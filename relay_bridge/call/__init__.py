"""The call runtime: one trio nursery per call, wiring codecs, speech logic and engines to sockets."""
