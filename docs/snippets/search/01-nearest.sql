SELECT id, text, -(embedding <#> $1) AS score
FROM vectors_songs
ORDER BY embedding <#> $1
LIMIT 10;
