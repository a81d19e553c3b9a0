# bind the table once: backfill now, then every INSERT and every change of title or artist
# 绑定一次：现在回填，之后每次 INSERT、每次 title 或 artist 的修改都会自动生成向量
embedq vectorize add songs_vec --table songs --id song_id \
  --template '{title} - {artist}' --vector title_embedding \
  --model .embedq/demo/models/all-minilm-l6-v2

# rows, pending, lag, rate, phase, and rows the table refused
# 行数、待处理、延迟、速率、阶段，以及被表拒绝写入的行
embedq vectorize status songs_vec
embedq vectorize list
