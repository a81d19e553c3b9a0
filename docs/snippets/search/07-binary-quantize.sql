CREATE INDEX CONCURRENTLY IF NOT EXISTS vectors_songs_embedding_bq
    ON vectors_songs USING hnsw ((binary_quantize(embedding)::bit(1024)) bit_hamming_ops);
SELECT id, text, -(embedding <#> $1) AS score
FROM (
    SELECT id, text, embedding
    FROM vectors_songs
    ORDER BY binary_quantize(embedding)::bit(1024) <~> binary_quantize($1)
    LIMIT 100
) AS candidates
ORDER BY embedding <#> $1
LIMIT 10;
