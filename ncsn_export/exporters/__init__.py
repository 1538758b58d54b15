"""Exporters: ONNX (score, step, fused sampler), TorchScript, torch.export; validation; export directories."""
