"""Model export, a product feature the deployment runs: a hub or local checkpoint to ONNX with its
manifest (model.py, m3.py), tokenizers built for legacy and shape models, INT8 quantisation
(quantize.py, quantize_openvino.py) and the fidelity gate they pass."""
