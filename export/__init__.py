"""ONNX export with parity checks, and engines (TensorRT, ONNX Runtime). Generic: knows nothing
of how a mask was found; reads a model folder and its spec."""
