"""Ray Job: a measurement, `retrieval` or `vqa` (arguments: `mmindex eval KIND --help`).

    ray job submit --working-dir . -- python pipelines/eval.py retrieval --pairs /data/val.parquet \
        --model /data/ckpt
"""

import sys

from _job import run

kind = sys.argv.pop(1) if len(sys.argv) > 1 else "--help"
run(["eval", kind])
