# 1. the model you serve today, exported (see Models)
#    导出当前在线使用的模型
embedq export-model BAAI/bge-large-zh-v1.5 --out /models/bge-large-zh-v1.5

# 2. mine hard negatives from your corpus, with teacher scores
#    从你的语料中挖掘难负例，并附上教师分数
embedq mine --collection songs --data train_queries.jsonl --out train.jsonl \
  --reranker BAAI/bge-reranker-v2-m3

# 3. fine-tune with FlagEmbedding, on your GPU (not run by this project)
#    用 FlagEmbedding 在你的 GPU 上微调（本项目不运行这一步）
pip install -U "FlagEmbedding[finetune]"
torchrun --nproc_per_node 1 -m FlagEmbedding.finetune.embedder.encoder_only.base \
  --model_name_or_path BAAI/bge-large-zh-v1.5 --train_data train.jsonl \
  --output_dir bge-large-zh-ft --train_group_size 8 --knowledge_distillation True \
  --query_max_len 64 --passage_max_len 512 --learning_rate 1e-5 --fp16 \
  --num_train_epochs 2 --per_device_train_batch_size 16 --temperature 0.02 \
  --sentence_pooling_method cls --normalize_embeddings True

# 4. export the fine-tuned checkpoint (it keeps the base model's query instruction only if
#    you name it: the checkpoint directory is not a known hub id)
#    导出微调后的检查点（本地目录不是已知的模型名，需显式给出查询指令）
embedq export-model ./bge-large-zh-ft --out /models/bge-large-zh-ft \
  --query-instruction "为这个句子生成表示以用于检索相关文章："

# 5. old against new on held-out pairs: the test pool and the global pool
#    在留出的测试对上比较新旧模型：测试池和全局池
embedq eval --data test_pairs.jsonl --model /models/bge-large-zh-v1.5 \
  --model /models/bge-large-zh-ft

# 6. if the new model wins: re-embed your live table to it (verify, cutover, rollback); for a
#    collection the API fills, roll it into a new collection instead (runbook)
#    若新模型更好：把你的在线表重新生成向量（校验、切换、可回滚）；由 API 写入的集合则改用新集合（见运维手册）
EMBEDQ_MODEL_DIR=/models/bge-large-zh-ft embedq worker
embedq reembed start --table songs --id id --text lyrics --vector embedding \
  --model /models/bge-large-zh-ft
