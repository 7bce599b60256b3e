"""``zoo embed``: embed a corpus (JSONL, Parquet, or a folder of files) on Ray Data into Parquet shards and,
optionally, a vector database (:mod:`zoo.store`). See :func:`zoo.batch.job.run`."""
