python -m pip install modelscope
modelscope download --model BAAI/bge-large-zh-v1.5 --local_dir models/src/bge-large-zh-v1.5
embedq export-model models/src/bge-large-zh-v1.5 --out models/bge-large-zh-v1.5
