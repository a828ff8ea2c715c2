"""Speech-turn logic: voice activity endpointing and text chunking. Pure: no I/O, no clocks."""
