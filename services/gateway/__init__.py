"""The Open Inference Protocol gateway at /v2: root OIP paths for every model."""
