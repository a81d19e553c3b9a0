# The vectors live in your table: embed the query through the API, then plain SQL.
# 向量就在你的表里：先通过 API 为查询生成向量，再直接写 SQL。
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

with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    rows = conn.execute(
        "SELECT song_id, title, artist FROM songs WHERE title_embedding IS NOT NULL"
        " ORDER BY title_embedding <=> %s::vector LIMIT 5",
        (str(query),),
    ).fetchall()
for row in rows:
    print(row)
