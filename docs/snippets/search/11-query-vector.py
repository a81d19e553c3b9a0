import os

import numpy as np
import psycopg
from openai import OpenAI
from pgvector.psycopg import register_vector

client = OpenAI(base_url=os.environ["EMBEDQ_API_URL"] + "/v1", api_key=os.environ["EMBEDQ_KEY"])
query = client.embeddings.create(
    model="songs", input="一首关于月亮和思念的歌", extra_body={"input_type": "query"}
)
q = np.array(query.data[0].embedding, dtype=np.float32)
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    register_vector(conn)
    rows = conn.execute(
        "SELECT id, text, -(embedding <#> %s) AS score FROM vectors_songs"
        " ORDER BY embedding <#> %s LIMIT 5",
        (q, q),
    ).fetchall()
