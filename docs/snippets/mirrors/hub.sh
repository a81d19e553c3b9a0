export HF_ENDPOINT=https://hf-mirror.com
embedq export-model BAAI/bge-large-zh-v1.5 --out models/bge-large-zh-v1.5
