embedq collections create mytexts --model-dir .embedq/demo/models/all-minilm-l6-v2
