"""The re-embedding migration: a live table's legacy vectors (e.g. 312-d ALBERT) re-embedded
into a new column (e.g. 1024-d BGE) in resumable chunks, then switched over atomically."""
