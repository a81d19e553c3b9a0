WITH dense AS (
    SELECT id, row_number() OVER (ORDER BY distance) AS rank
    FROM (SELECT id, embedding <#> $1 AS distance
          FROM vectors_products
          ORDER BY embedding <#> $1
          LIMIT 100) AS d
), sparse AS (
    SELECT id, row_number() OVER (ORDER BY distance) AS rank
    FROM (SELECT id, sparse_embedding <#> $2::sparsevec AS distance
          FROM vectors_products
          ORDER BY sparse_embedding <#> $2::sparsevec
          LIMIT 100) AS s
)
SELECT v.id, v.text,
       COALESCE(1.0 / (60 + dense.rank), 0) + COALESCE(1.0 / (60 + sparse.rank), 0) AS score
FROM dense
FULL JOIN sparse USING (id)
JOIN vectors_products AS v USING (id)
ORDER BY score DESC
LIMIT 10;
