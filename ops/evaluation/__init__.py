"""`embedq eval`: which exported model retrieves better on a user's own labelled pairs.

dataset (FlagEmbedding JSONL) → run (embed with the workers' engine) → metrics (pure numpy)
→ report (table, JSON, plot).
"""
