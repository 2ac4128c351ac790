"""Data sources: folder scanning, image decoding, pairs files, the synthetic shapes domain."""
