"""`mmindex ingest`: the run (scan -> plan -> encode -> commit), the batch encoders, and the
in-process and Ray executors."""
