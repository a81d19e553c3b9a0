BEGIN;
SET LOCAL hnsw.iterative_scan = relaxed_order;
WITH hits AS MATERIALIZED (
    SELECT id, text, metadata, embedding <#> $1 AS distance
    FROM vectors_songs
    WHERE metadata @> '{"lang": "zh"}'
    ORDER BY embedding <#> $1
    LIMIT 10
)
SELECT id, text, metadata, -distance AS score FROM hits ORDER BY distance;
COMMIT;
