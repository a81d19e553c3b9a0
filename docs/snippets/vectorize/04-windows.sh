# long texts: cut each row's text into windows of 128 tokens overlapping by 16, kept in
# songs_title_windows_chunks (one row per window) beside the songs table
# 长文本：把每行文本切成 128 个 token 的窗口、相邻重叠 16 个，存入 songs 表旁边的
# songs_title_windows_chunks（每个窗口一行）
embedq vectorize add songs_windows --table songs --id song_id --text title \
  --vector title_windows --model .embedq/demo/models/all-minilm-l6-v2 \
  --chunk-max-tokens 128 --chunk-overlap-tokens 16
embedq vectorize status songs_windows
