"""OneInFlight (parsers/base.py), which runs the CAN inserts and the capture's OCPP staging
beside the parser: jobs in order, never two at once, errors raised at the next step, and
nothing still running once the block is left, even when it failed."""

from __future__ import annotations

import threading
import time

import pytest

from forensics.parsers.base import OneInFlight


@pytest.mark.parametrize("threaded", [True, False])
def test_jobs_run_in_order_one_at_a_time(threaded):
    done, running, overlap = [], [0], []

    def job(i):
        running[0] += 1
        overlap.append(running[0])
        time.sleep(0.01)
        done.append((i, threading.current_thread() is threading.main_thread()))
        running[0] -= 1

    with OneInFlight(threaded) as jobs:
        for i in range(5):
            jobs.submit(job, i)
    assert [i for i, _ in done] == list(range(5))
    assert max(overlap) == 1
    assert {main for _, main in done} == {not threaded}


def test_an_error_is_raised_at_the_next_submit():
    def fail():
        raise ValueError("insert failed")

    jobs = OneInFlight()
    jobs.submit(fail)
    with pytest.raises(ValueError, match="insert failed"):
        jobs.submit(lambda: None)
    jobs.close()


def test_leaving_after_a_failure_waits_for_the_job_and_keeps_the_blocks_error():
    finished = []

    def slow():
        time.sleep(0.2)
        finished.append(True)
        raise OSError("late")

    with pytest.raises(RuntimeError, match="parser failed"), OneInFlight() as jobs:
        jobs.submit(slow)
        raise RuntimeError("parser failed")
    assert finished == [True]  # done before the caller went on to clean up
