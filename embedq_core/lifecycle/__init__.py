"""A job's and its batches' states and transitions: the only code that writes jobs, job_items
and job_batches. The API and the workers both import it.

- jobs.py: create a job with its items and batches (the API), send its batches, read it back.
  queued → running (first claim) → completed | completed_with_errors | failed.
- delivery.py: each batch's delivery record (sent, claimed, delivered, finished) and the rule
  that finds a lost batch for the reconciler to send again.
- claims.py: a worker claims a batch's pending items, counts an attempt, records a failure,
  gives an attempt back, finishes the batch; an item goes pending → done | failed once.
"""
