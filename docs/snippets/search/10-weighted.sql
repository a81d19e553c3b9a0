WITH candidates AS (
    (SELECT id FROM vectors_products ORDER BY embedding <#> $1 LIMIT 100)
    UNION
    (SELECT id FROM vectors_products ORDER BY sparse_embedding <#> $2::sparsevec LIMIT 100)
)
SELECT v.id, v.text,
       -(v.embedding <#> $1) + 0.3 * -(v.sparse_embedding <#> $2::sparsevec) AS score
FROM candidates
JOIN vectors_products AS v USING (id)
ORDER BY score DESC
LIMIT 10;
