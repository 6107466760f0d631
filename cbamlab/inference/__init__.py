"""Using a trained model, above the engine and below the CLI: load it from a run directory or a weights file,
evaluate it as `fit` evaluates, classify image files (`predict`), and export it to ONNX, TorchScript or
torch.export with a check that the export reproduces it (`export`). Explain loads its models through here."""
