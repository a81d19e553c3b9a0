# a collection whose items are documents: windows of 200 tokens, each overlapping the last by 30
# 条目是文档的集合：每个窗口 200 个 token，与前一个窗口重叠 30 个
embedq collections create handbook --model-dir .embedq/demo/models/all-minilm-l6-v2 \
  --chunk-max-tokens 200 --chunk-overlap-tokens 30
