SELECT id, text, 1 - (embedding <=> $1) AS cosine
FROM vectors_songs
ORDER BY embedding <=> $1
LIMIT 10;
