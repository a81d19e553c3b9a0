# queries with their positives (as text, or as ids of the collection's rows: "pos_ids")
# 查询及其正例（正例可以是文本，也可以是集合中行的 id："pos_ids"）
cat > queries.jsonl <<'JSONL'
{"query": "一首旋律好听但歌词忧伤的歌", "pos": ["这首歌旋律优美，歌词却很悲伤。"]}
{"query": "cat sleeping in the sun", "pos_ids": ["en-000"]}
JSONL

# mine: the fleet embeds the queries, pgvector finds the candidates; teacher scores from a
# reranker the fleet serves (through /v1/rerank, so EMBEDQ_API_URL and EMBEDQ_KEY are needed)
# 挖掘：由 worker 集群为查询生成向量，pgvector 找出候选；教师分数来自集群中的重排模型
embedq mine --collection songs --data queries.jsonl --out train.jsonl \
  --range 2-100 --negatives 7 --reranker BAAI/bge-reranker-v2-m3

head -c 400 train.jsonl
