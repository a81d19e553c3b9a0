# 0. export the model once, start workers that serve it (one per GPU)
#    导出模型（一次），启动服务该模型的 worker（每块 GPU 一个）
embedq export-model BAAI/bge-large-zh-v1.5 --out /models/bge-large-zh-v1.5
EMBEDQ_MODEL_DIR=/models/bge-large-zh-v1.5 embedq worker

# 1. plan: row count, time estimate measured on your rows, the DDL
#    计划：行数、基于你的数据实测的耗时估计、将执行的 DDL
embedq reembed plan --table songs --id id --text lyrics --vector embedding \
  --model /models/bge-large-zh-v1.5

#    names are written as in SQL (see "Table and column names" below), e.g. a Prisma table:
#    表名和列名按 SQL 的写法给出（见下文“表名和列名”），例如 Prisma 建的表：
embedq reembed plan --table '"Shop Data"."SongLyrics"' --id '"songId"' \
  --text '"lyricsText"' --vector '"Embedding"' --model /models/bge-large-zh-v1.5

# 2. start, and watch (progress bar with rate and ETA; also GET /v1/reembed/songs_reembed
#    and the embedq_reembed_* metrics)
#    开始并观察进度（进度条含速率和预计剩余时间；也可用 API 和 Prometheus 指标）
embedq reembed start --table songs --id id --text lyrics --vector embedding \
  --model /models/bge-large-zh-v1.5
embedq reembed status songs_reembed --watch
# status (and the API) never scan the table: its row counts are the migration's own, taken at
# start and at each phase change (counted_at); --exact counts the whole table now.
# status（以及 API）从不扫描表：行数是迁移在开始和每次阶段切换时自己统计的（counted_at）；
# 加 --exact 会立即对整张表精确计数。
embedq reembed status songs_reembed --exact

# pause / resume at any time (resume continues from the checkpoint; if `start` was
# interrupted while building the pending-rows index, resume rebuilds it first)
# 随时暂停 / 恢复（从检查点继续；若 start 在建待处理行索引时中断，resume 会先重建该索引）
embedq reembed pause songs_reembed
embedq reembed resume songs_reembed

# 3. verify: every row has a 1024-d, unit-norm vector from this manifest; a random sample
#    re-embedded now matches what is stored (cos ≥ 0.9999)
#    校验：每行都有该模型生成的 1024 维单位向量；随机抽样重新计算与存储一致（cos ≥ 0.9999）
embedq reembed verify songs_reembed --model /models/bge-large-zh-v1.5

# 4. cutover (refused until the backfill and index are done and at most one chunk of rows with
#    text lacks a vector, unless --force); rollback switches back; cutover again at will
#    切换（回填和索引完成、且缺少新向量的有文本行不超过一块之前会拒绝，除非 --force）；可回滚，
#    也可再次切换
embedq reembed cutover songs_reembed
embedq reembed rollback songs_reembed

# 5. finalize drops the legacy column and the trigger; after it, send new text through the
#    API (POST /v1/collections/{name}/jobs) or keep the migration un-finalized to keep
#    following the table
#    finalize 删除旧列和触发器；之后新文本请通过 API 提交，或者不执行 finalize 以继续跟踪该表
embedq reembed finalize songs_reembed
