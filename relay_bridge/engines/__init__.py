"""Speech engines: synchronous, trio-unaware, loaded once per process and shared by all calls."""
