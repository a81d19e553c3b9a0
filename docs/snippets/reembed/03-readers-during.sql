-- $1: a 1024-d BGE query vector, embedded WITH the query instruction
--     1024 维 BGE 查询向量，查询需要加指令前缀「为这个句子生成表示以用于检索相关文章：」
SELECT id, lyrics, -(embedding_1024 <#> $1) AS score
FROM songs WHERE embedding_1024 IS NOT NULL
ORDER BY embedding_1024 <#> $1 LIMIT 10;
