"""A worker's Prometheus series (series.py), what records into them (metrics.py) and the
listener that serves them (listener.py)."""
