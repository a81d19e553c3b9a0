import os

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector

api = os.environ["EMBEDQ_API_URL"]
headers = {"Authorization": f"Bearer {os.environ['EMBEDQ_KEY']}"}
query = "一首关于月亮和思念的歌"
embedded = httpx.post(
    f"{api}/v1/embeddings",
    headers=headers,
    json={"model": "songs", "input": query, "input_type": "query"},
).json()
q = np.array(embedded["data"][0]["embedding"], dtype=np.float32)
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    register_vector(conn)
    candidates = conn.execute(  # stage 1: the HNSW index's 50 nearest rows
        "SELECT id, text FROM vectors_songs ORDER BY embedding <#> %s LIMIT 50", (q,)
    ).fetchall()
reranked = httpx.post(  # stage 2: the reranker orders them
    f"{api}/v1/rerank",
    headers=headers,
    json={
        "model": "BAAI/bge-reranker-v2-m3",
        "query": query,
        "documents": [text for _, text in candidates],
        "top_n": 10,
        "return_documents": False,
    },
).json()
for result in reranked["results"]:
    row_id, text = candidates[result["index"]]
    print(f"{result['relevance_score']:.3f}  {row_id}  {text[:40]}")
