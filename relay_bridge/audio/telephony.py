"""The telephone line's audio as every provider carries it: 8 kHz, in 20 ms frames of 160 samples."""

SAMPLE_RATE_HZ = 8000
FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES  # mu-law and A-law: one byte a sample
