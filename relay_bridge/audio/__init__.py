"""Sample-level audio: G.711, resampling, buffering. Pure: no I/O, no clocks."""
