"""Ray Job: check an index and rebuild what can be rebuilt without re-encoding
(arguments: `mmindex doctor --help`).

    ray job submit --working-dir . -- python pipelines/repair.py --index /data/idx
"""

from _job import run

run(["doctor"], defaults={"--repair": ["--repair"]})
