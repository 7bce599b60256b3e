"""One module per model family: each holds its family class, found through the ``zoo.families`` entry points,
and registers its known checkpoints on import."""
