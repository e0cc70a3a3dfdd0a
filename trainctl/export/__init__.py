"""Models leaving trainctl: `trainctl export RUN --format onnx`."""
