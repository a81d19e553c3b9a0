-- Up to two passages per document, documents ranked by their best one.
WITH candidates AS (
    SELECT id, chunk_no, text, -(embedding <#> $1) AS score
    FROM vectors_manuals
    ORDER BY embedding <#> $1
    LIMIT 200
), ranked AS (
    SELECT *,
           row_number() OVER (PARTITION BY id ORDER BY score DESC) AS rank_in_document,
           max(score) OVER (PARTITION BY id) AS document_score
    FROM candidates
)
SELECT id, chunk_no, text, score
FROM ranked
WHERE rank_in_document <= 2
ORDER BY document_score DESC, id, score DESC
LIMIT 20;
