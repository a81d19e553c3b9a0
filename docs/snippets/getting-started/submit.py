import json
import os
import time

import httpx

api = os.environ["EMBEDQ_API_URL"]
headers = {"Authorization": f"Bearer {os.environ['EMBEDQ_KEY']}"}
with open("my_texts.jsonl", encoding="utf-8") as lines:
    items = [json.loads(line) for line in lines if line.strip()]

job_ids = []
for start in range(0, len(items), 1000):  # a job holds at most EMBEDQ_MAX_ITEMS_PER_JOB items
    answer = httpx.post(
        f"{api}/v1/collections/mytexts/jobs",
        json={"items": items[start : start + 1000]},
        headers=headers,
    )
    answer.raise_for_status()  # 202: the items are stored in Postgres
    job_ids.append(answer.json()["job_id"])

for job_id in job_ids:
    while (job := httpx.get(f"{api}/v1/jobs/{job_id}", headers=headers).json())["status"] in (
        "queued",
        "running",
    ):
        time.sleep(0.5)
    print(job_id, job["status"], f"{job['done']}/{job['total']} done", job["errors"])
