"""What a worker process runs beside its deliveries: the reconciler (re-sends lost batches),
index maintenance (HNSW builds), the live-query server and the watchdog (ends a hung batch)."""
