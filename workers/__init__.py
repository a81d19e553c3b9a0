"""The Celery worker: tasks, the embedding engine and the pgvector writer."""
