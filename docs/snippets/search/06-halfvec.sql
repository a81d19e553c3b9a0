CREATE INDEX CONCURRENTLY IF NOT EXISTS vectors_songs_embedding_halfvec
    ON vectors_songs USING hnsw ((embedding::halfvec(1024)) halfvec_ip_ops);
SELECT id, text, -(embedding::halfvec(1024) <#> $1::halfvec(1024)) AS score
FROM vectors_songs
ORDER BY embedding::halfvec(1024) <#> $1::halfvec(1024)
LIMIT 10;
