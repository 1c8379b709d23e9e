"""The engine: torch, onnxruntime, data and the run store. It never imports Qt (a test enforces this)."""
