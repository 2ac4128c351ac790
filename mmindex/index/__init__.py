"""The index directory: table schemas, Parquet shards and the manifest (store), FAISS files
(vectors), change plans and the doctor."""
