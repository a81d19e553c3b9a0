"""One delivery of a batch, from the Celery task to its vector rows, in the order it runs:

run.py (the orchestrator: lane, claim, plan, embed, store) → lock.py (the batch's advisory
lock on a lane's session) → coalesce.py (waiting small batches claimed into the same engine
call) → embed.py (which items to embed, the engine call, a failure's reason) → isolation.py (a
text the engine cannot embed fails alone) → store.py (the write transaction) → rows.py (the
pgvector COPY and upsert). lanes.py runs the embed and the write behind the consumer thread;
db.py holds the reconnecting session and the retry of transient errors.
"""
