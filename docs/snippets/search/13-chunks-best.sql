-- The 10 documents whose best chunk is nearest, each with that chunk: the best chunk of each
-- document among the 200 nearest chunks (the HNSW index serves the inner query).
WITH candidates AS (
    SELECT id, chunk_no, span_start, span_end, text, -(embedding <#> $1) AS score
    FROM vectors_manuals
    ORDER BY embedding <#> $1
    LIMIT 200
)
SELECT id, chunk_no, span_start, span_end, text, score
FROM (
    SELECT DISTINCT ON (id) *
    FROM candidates
    ORDER BY id, score DESC
) best
ORDER BY score DESC
LIMIT 10;
