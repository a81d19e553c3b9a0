-- $1: a 1024-d BGE query vector. Vectors are unit length: use inner product (<#>), which the
--     HNSW index (vector_ip_ops) serves; -(a <#> b) is the cosine similarity.
--     1024 维 BGE 查询向量。向量已归一化：使用内积（<#>），HNSW 索引（vector_ip_ops）可用；
--     -(a <#> b) 即余弦相似度。
SELECT id, lyrics, -(embedding <#> $1) AS score FROM songs ORDER BY embedding <#> $1 LIMIT 10;
-- which model produced a row / 每行由哪个模型生成
SELECT embedding_manifest, count(*) FROM songs GROUP BY 1;
-- the legacy vectors stay in embedding_legacy until finalize
-- 旧向量在 finalize 之前保留在 embedding_legacy 列
