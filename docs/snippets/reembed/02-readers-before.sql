-- $1: a 312-d ALBERT query vector / 312 维 ALBERT 查询向量
SELECT id, lyrics FROM songs ORDER BY embedding <-> $1 LIMIT 10;
