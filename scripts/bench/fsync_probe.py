#!/usr/bin/env python3
"""How long this machine's disk takes to make a small write durable, beside a soak.

    fsync_probe.py DIR SECONDS [WINDOW_SECONDS=60]

Every 10 ms for SECONDS, overwrites 4 KiB of a file in DIR and fsyncs it (what one
group commit of the embedded store asks of the disk, at its smallest), and prints,
per WINDOW_SECONDS (stamped with the time it ended), the fsyncs made, their p50, p99 and slowest, and how many took
over 100 ms. Run beside `scripts/bench/soak.sh embedded` on the data directory's
file system: a slow store batch in the same minute as a slow probe fsync is the
disk's, not the store's. The probe's own load is one 4 KiB write a 10 ms.
"""

import os
import sys
import time

PERIOD_SECONDS = 0.01
BLOCK = b"\0" * 4096
SLOW_SECONDS = 0.1


def summary(window, durations):
    ordered = sorted(durations)
    if not ordered:
        return f"{time.strftime('%H:%M:%S')} window {window}: no fsync"

    def quantile(q):
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    slow = sum(1 for d in ordered if d > SLOW_SECONDS)
    return (f"{time.strftime('%H:%M:%S')} window {window}: {len(ordered)} fsyncs  p50 {quantile(0.5):.2f} ms  "
            f"p99 {quantile(0.99):.2f} ms  max {ordered[-1] * 1000:.1f} ms  over 100 ms {slow}")


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    directory, seconds = argv[1], float(argv[2])
    window_seconds = float(argv[3]) if len(argv) == 4 else 60.0
    path = os.path.join(directory, f"fsync-probe-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        start = time.monotonic()
        window, durations = 1, []
        while (now := time.monotonic()) - start < seconds:
            if now - start >= window * window_seconds:
                print(summary(window, durations), flush=True)
                window, durations = window + 1, []
            os.pwrite(fd, BLOCK, 0)
            began = time.monotonic()
            os.fsync(fd)
            durations.append(time.monotonic() - began)
            time.sleep(max(0.0, PERIOD_SECONDS - (time.monotonic() - now)))
        print(summary(window, durations), flush=True)
    finally:
        os.close(fd)
        os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
