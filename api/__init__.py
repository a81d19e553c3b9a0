"""The HTTP API: validates, records jobs in Postgres, enqueues batches by task name.

It never imports an ML library, so it starts fast.
"""
