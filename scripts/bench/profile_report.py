"""Groups each process's perf samples by what they were doing, and its context
switches by thread.

    python3 scripts/bench/profile_report.py OUT_DIR SCANS KIND...

Reads OUT_DIR/KIND.report (`perf report --no-children --sort sym --stdio -g none`,
written by scripts/bench/profile.sh) and prints one markdown table: per process,
the percentage of its samples in each group. A symbol belongs to the first group
whose pattern matches it; kernel symbols ([k]) are split by what the kernel was
doing for the process. The top symbols of each process follow, so that a group's
content can be checked.

Then, from OUT_DIR/KIND.threads-before and .threads-after (thread id, context
switches, thread name, taken around the profiled SCANS scans), each process's
context switches per scan by kind of thread (the name without its number:
tokio's workers, each librdkafka thread, the delivery-report thread), so that the
hand-offs a scan costs can be told apart.
"""

import re
import sys
from pathlib import Path

# (group, kernel symbol?, pattern) in order: the first match wins.
GROUPS = [
    ("kernel: scheduling, futex, wake-ups", True,
     r"schedule|switch|futex|wake|enqueue|dequeue|pick_next|idle|update_curr|"
     r"psi_|select_task|ttwu|hrtimer|sched|cpuacct|finish_task|raw_spin"),
    ("kernel: network (loopback TCP)", True,
     r"tcp|ip_|ipv|sock|skb|net|inet|__dev|loopback|_copy_|copy_user|csum|nf_"),
    ("kernel: epoll, other system calls", True, r"."),
    ("librdkafka", False, r"^rd_|rd_kafka|^tinycthread|^cnd_|^mtx_|^thrd_"),
    ("tokio", False, r"tokio::"),
    ("Redis client", False, r"redis::|combine::"),
    ("HTTP (hyper, axum, tower)", False, r"hyper|axum|tower|h2::|http::|httparse"),
    ("tracing and logs", False, r"tracing|presence_runtime::json_fields"),
    ("allocation (jemalloc, libc malloc)", False,
     r"je_|jemalloc|_rjem|malloc|free|realloc|calloc|alloc::"),
    ("protobuf", False, r"prost"),
    ("JSON (serde)", False, r"serde"),
    ("libc: copies, locks, clock", False,
     r"mem(cpy|move|set|cmp)|pthread|clock_gettime|__lll|__vdso|strlen|__libc|"
     r"_dl_|__GI_|syscall"),
    ("Redis server", False, r"^(dict|lookup|call|process|read|write|aof|rdb|ae|listRotate|"
     r"zmalloc|sds|lua|luaV|luaH|luaD|luaS|luaC|luaF|luaK|luaL|luaX|luaY|luaO|luaG|luaT|"
     r"redis|RM_|execCommand|evalGeneric)"),
    ("Presence's own code", False, r"presence"),
    ("other", False, r"."),
]

LINE = re.compile(r"^\s*([0-9.]+)%\s+\[([k.])\]\s+(.*)$")


def grouped(report: Path):
    shares = {name: 0.0 for name, _, _ in GROUPS}
    top = []
    if not report.exists():
        return shares, top
    for line in report.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if not match:
            continue
        percent, space, symbol = float(match[1]), match[2], match[3].strip()
        kernel = space == "k"
        for name, for_kernel, pattern in GROUPS:
            if for_kernel == kernel and re.search(pattern, symbol):
                shares[name] += percent
                break
        if len(top) < 8:
            top.append(f"{percent:.1f} % {'[k] ' if kernel else ''}{symbol[:70]}")
    return shares, top


def thread_kind(name: str) -> str:
    """A thread's name without what numbers it (rdk:broker3, rdk:broker-1)."""
    return re.sub(r"[-_]?[0-9]+$", "", name) or name


def switches_by_thread(out: Path, kind: str) -> dict:
    """Context switches per kind of thread between the two snapshots; threads
    that started meanwhile count from zero, those that ended are not counted."""
    def read(path: Path) -> dict:
        threads = {}
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                fields = line.split(" ", 2)
                if len(fields) == 3:
                    threads[fields[0]] = (int(fields[1]), fields[2])
        return threads

    before = read(out / f"{kind}.threads-before")
    after = read(out / f"{kind}.threads-after")
    kinds = {}
    for tid, (switches, name) in after.items():
        earlier = before.get(tid, (0, name))[0]
        count, total = kinds.get(thread_kind(name), (0, 0))
        kinds[thread_kind(name)] = (count + 1, total + switches - earlier)
    return kinds


def main() -> None:
    out, scans, kinds = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    results = {kind: grouped(out / f"{kind}.report") for kind in kinds}
    print("| samples (%) | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name, _, _ in GROUPS:
        cells = [results[kind][0][name] for kind in kinds]
        if any(cell >= 0.5 for cell in cells):
            print(f"| {name} | " + " | ".join(f"{cell:.1f}" for cell in cells) + " |")
    print()
    for kind in kinds:
        print(f"{kind}: " + "; ".join(results[kind][1]))
    print()
    print("| process | context switches per scan, by thread (threads of that kind) |")
    print("|---|---|")
    for kind in kinds:
        by_thread = sorted(switches_by_thread(out, kind).items(), key=lambda item: -item[1][1])
        cells = [f"{name} ({count}): {total / max(scans, 1):.2f}"
                 for name, (count, total) in by_thread if total / max(scans, 1) >= 0.01]
        print(f"| {kind} | " + "; ".join(cells) + " |")


if __name__ == "__main__":
    main()
