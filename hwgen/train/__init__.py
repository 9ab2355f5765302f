"""Fine-tuning through sim.torch: a generic loop (`loop`) and quantization-aware training (`qat`)."""
