"""Sans-IO codecs for the two wire protocols. Pure: they turn text frames into typed events and
events into text frames, and hold the protocol state; they never touch a socket."""
