"""The benchmarks' local Ray clusters start one at a time when asked to.

tests/test_benchmarks.py runs several scripts at once, and may run two that
each start a cluster of their own: two clusters starting together on a
loaded 2-core machine can miss Ray's 30 s raylet registration wait, which
fails the start. So when `STREAMGEN_BENCH_RAY_LOCK` names a file, `lock()`
holds it (`flock`) while a script's cluster starts; once started, clusters
run side by side. Without the variable (a run by hand) there is no lock.
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
