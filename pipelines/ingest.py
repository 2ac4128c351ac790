"""Ray Job: index folders on the cluster the job runs on (arguments: `mmindex ingest --help`).

    ray job submit --working-dir . -- python pipelines/ingest.py /data/photos --index /data/idx
"""

from _job import run

run(["ingest"], defaults={"--executor": ["--executor", "ray"]})  # a job asks for the cluster at any size
