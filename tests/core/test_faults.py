"""Fault points armed through $MMINDEX_FAULTS, as a test arms them in other processes (Ray
workers, a submitted job); the in-process registry is exercised by tests/index."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mmindex.core import faults


def test_the_environment_arms_a_sleep_and_a_crash():
    registry = faults.FaultRegistry()
    faults.arm_from_environment(registry, "encode.batch=sleep:0.2; store.committed=crash:1")
    started = time.monotonic()
    registry.hit("encode.batch")
    assert time.monotonic() - started >= 0.2
    registry.hit("store.committed")  # the first visit passes
    with pytest.raises(faults.SimulatedCrash):
        registry.hit("store.committed")


@pytest.mark.parametrize("value", ["encode.batch=nap:1", "no.such.point=sleep:1",
                                   "encode.batch", "encode.batch=sleep:soon"])
def test_a_bad_environment_value_names_itself_and_the_format(value):
    with pytest.raises(ValueError, match="MMINDEX_FAULTS: cannot arm .*point=action:arg"):
        faults.arm_from_environment(faults.FaultRegistry(), value)


def test_a_new_process_is_armed_on_import():
    script = ("from mmindex.core import faults; import time; t = time.monotonic(); "
              "faults.point('encode.batch'); print(time.monotonic() - t)")
    env = os.environ | {"MMINDEX_FAULTS": "encode.batch=sleep:0.3"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert float(out) >= 0.3
