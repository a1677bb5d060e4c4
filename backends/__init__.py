"""fractalc backends: torch, onnx, xnor runtime, graphviz. Each is imported lazily."""
