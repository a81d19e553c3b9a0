SELECT id, text, -(sparse_embedding <#> $2::sparsevec) AS lexical_score
FROM vectors_products
ORDER BY sparse_embedding <#> $2::sparsevec
LIMIT 10;
