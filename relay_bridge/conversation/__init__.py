"""The conversation of a call, sans-IO: turn-taking as a pure state machine (``Conversation``)."""
