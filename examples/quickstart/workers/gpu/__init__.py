"""GPU queue-based endpoint: embeddings (pure Python here, so it also runs on a CPU)."""
