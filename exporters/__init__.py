"""PyTorch -> ONNX export and the ONNX graph passes that prepare a graph for an engine."""
