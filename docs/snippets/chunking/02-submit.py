import os
import time

import httpx

api = os.environ["EMBEDQ_API_URL"]
headers = {"Authorization": f"Bearer {os.environ['EMBEDQ_KEY']}"}
# A long document is one item: the worker cuts it into chunks of the model's own tokens.
# 一篇长文档就是一个条目：worker 按模型自己的 token 把它切块。
opening_hours = " ".join(
    f"Section {n}. The office opens at {8 + n % 3} in the morning and closes at six."
    for n in range(60)
)
key = "The spare key to the server room is kept in the blue box at reception."
visitors = " ".join(
    f"Rule {n}. Visitors sign in at the front desk and wear a badge." for n in range(60)
)
handbook = f"{opening_hours} {key} {visitors}"
answer = httpx.post(
    f"{api}/v1/collections/handbook/jobs",
    json={"items": [{"id": "office-handbook", "text": handbook, "metadata": {"team": "ops"}}]},
    headers=headers,
)
answer.raise_for_status()
job_id = answer.json()["job_id"]
while (job := httpx.get(f"{api}/v1/jobs/{job_id}", headers=headers).json())["status"] in (
    "queued",
    "running",
):
    time.sleep(0.5)
print(job["status"], f"{job['done']} document, {job['chunks']} chunks")

hits = httpx.post(
    f"{api}/v1/collections/handbook/search",
    json={"query": "where is the server room key?", "k": 1},
    headers=headers,
).json()["hits"]
best = hits[0]  # the document, with its best chunk: text and where it sits in the document
print(best["id"], best["chunk_no"], best["span_start"], best["span_end"], best["text"][:80])
assert "blue box" in handbook[best["span_start"] : best["span_end"]]
