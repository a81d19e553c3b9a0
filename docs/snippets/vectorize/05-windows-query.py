# The songs whose best window is nearest, each with that window: the best window of each row
# among the 200 nearest windows (the HNSW index serves the inner query).
# 最佳窗口离查询最近的歌曲及该窗口：在最近的 200 个窗口中取每行最好的一个（内层查询走 HNSW 索引）。
import os

import psycopg
from openai import OpenAI

client = OpenAI(base_url=os.environ["EMBEDQ_API_URL"] + "/v1", api_key=os.environ["EMBEDQ_KEY"])
query = (
    client.embeddings.create(
        model="sentence-transformers/all-MiniLM-L6-v2", input=["a song about the rain"]
    )
    .data[0]
    .embedding
)

SQL = """
WITH candidates AS (
    SELECT song_id, chunk_no, chunk_text, title_windows <=> %(q)s::vector AS distance
    FROM songs_title_windows_chunks
    ORDER BY title_windows <=> %(q)s::vector
    LIMIT 200
)
SELECT best.song_id, songs.artist, best.chunk_text, best.distance
FROM (SELECT DISTINCT ON (song_id) * FROM candidates ORDER BY song_id, distance) best
JOIN songs USING (song_id)
ORDER BY best.distance
LIMIT 5
"""
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    for row in conn.execute(SQL, {"q": str(query)}):
        print(row)
