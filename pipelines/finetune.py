"""Ray Job: contrastive fine-tuning, `--workers N` on the cluster's Ray Train workers
(arguments: `mmindex finetune --help`).

    ray job submit --working-dir . -- python pipelines/finetune.py --pairs /data/pairs.parquet \
        --model ViT-B-32:laion2b_s34b_b79k --out /data/ckpt --workers 4
"""

from _job import run

run(["finetune"])
