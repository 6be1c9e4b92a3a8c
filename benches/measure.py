"""Running a benchmarked command: wall time and the peak memory of that process."""
import subprocess
import tempfile
import time

TIME = "/usr/bin/time"  # GNU time (Debian package `time`), for peak memory


def run_measured(cmd, env=None):
    """Run a command and return (seconds, peak RSS MiB of that process, stdout, stderr).

    The peak is measured by /usr/bin/time: Linux carries a process's RSS
    high-water mark across fork and exec, so a child of a Python process
    (large once pyarrow and DuckDB are loaded) would report at least its size."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as peak:
        proc = subprocess.Popen([TIME, "-f", "%M", "-o", peak.name] + cmd, env=env, stdout=out, stderr=err)
        status = proc.wait()
        elapsed = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        o, e = out.read(), err.read().decode(errors="replace")
        kib = peak.read().strip().splitlines()
    if status != 0:
        raise RuntimeError(f"failed: {' '.join(cmd)[:300]}\n{e[-2000:]}")
    return elapsed, int(kib[-1]) / 1024, o, e
