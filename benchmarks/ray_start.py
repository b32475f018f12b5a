"""The benchmarks' local Ray clusters start one at a time when asked to.

tests/test_benchmarks.py runs several scripts at once, and may run two that
each start a cluster of their own: two clusters starting together on a
loaded 2-core machine can miss Ray's 30 s raylet registration wait, which
fails the start. So when `STREAMGEN_BENCH_RAY_LOCK` names a file, `lock()`
holds it (`flock`) while a script's cluster starts; once started, clusters
run side by side. Without the variable (a run by hand) there is no lock.
`init()` starts the benchmarks' cluster that way.
"""

import contextlib
import os

LOCK_ENV = "STREAMGEN_BENCH_RAY_LOCK"


@contextlib.contextmanager
def lock():
    """Holds the file named by `STREAMGEN_BENCH_RAY_LOCK`, if any (wrap `ray.init`)."""
    path = os.environ.get(LOCK_ENV)
    if not path:
        yield
        return
    import fcntl

    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def init(**options):
    """`ray.init` of the benchmarks' local cluster (2 CPUs, quiet, 127.0.0.1)
    under `lock()`; `options` override or add to its arguments."""
    import ray

    arguments = dict(address="local", num_cpus=2, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
    with lock():  # one cluster start at a time (the tests run several)
        ray.init(**{**arguments, **options})
