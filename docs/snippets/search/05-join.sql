SELECT s.song_id, s.title, s.artist, -(v.embedding <#> $1) AS score
FROM vectors_songs AS v
JOIN songs AS s ON s.song_id = v.id
ORDER BY v.embedding <#> $1
LIMIT 10;
