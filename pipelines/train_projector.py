"""Ray Job: train the projector between a CLIP and the LLM on a cluster node
(arguments: `mmindex train-projector --help`).

    ray job submit --working-dir . -- python pipelines/train_projector.py --model /data/clip \
        --captions /data/pairs.parquet --questions /data/questions.parquet --out /data/projector
"""

from _job import run

run(["train-projector"])
