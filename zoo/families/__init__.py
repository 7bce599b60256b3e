"""One module per model family; each registers itself and its known checkpoints on import."""
