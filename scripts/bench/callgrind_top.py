"""The functions of a callgrind_annotate listing (stdin) with the most
instructions, per scan: `callgrind_top.py TOTAL SCANS TOP`.

Functions are named without their file; one inlined into several files is
listed once, with its largest count. Left out: the frames that were on a
thread's stack when the measurement began (a thread's start, main, the
harness, the runtime's `block_on`), which callgrind charges with everything
below them, and counts above the total (its sums over recursive cycles).
"""

import re
import sys

total, scans, top = (int(arg) for arg in sys.argv[1:4])
outer_frames = re.compile(
    r"^(clone|start_thread|\(below main\)|__libc_start_main.*|main|0x[0-9a-f]+"
    r"|std::rt::.*|std::sys::.*|<std::sys::thread::.*|core::ops::function::FnOnce::call_once\{\{vtable\.shim\}\}"
    r"|presence_instructions::.*|.*\bblock_on|tokio::runtime::context::.*)$"
)
line = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*?)(?:\s+\[[^\]]*\])?\s*$")
counts = {}
for text in sys.stdin:
    match = line.match(text)
    if not match or "PROGRAM TOTALS" in text:
        continue
    count = int(match.group(1).replace(",", ""))
    where = match.group(2)
    # "file:function": the file never holds a colon, the function may.
    function = where.split(":", 1)[1] if ":" in where else where
    if count > total or outer_frames.match(function):
        continue
    counts[function] = max(counts.get(function, 0), count)
for function, count in sorted(counts.items(), key=lambda item: -item[1])[:top]:
    print(f"  {count // scans:>9}  {100 * count / total:5.1f} %  {function[:140]}")
