"""Hard-negative mining over a collection: `embedq mine` (FlagEmbedding's training format)."""
