"""Export a run's best weights to ONNX, with what a user needs to run them without nnlab."""
