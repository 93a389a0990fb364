#!/usr/bin/env python3
"""The verdict and the tables of a soak (scripts/bench/soak.sh), from what it left in OUT:

    soak_report.py report OUT WINDOWS WARMUP CLK_TCK  # tables, summary, verdict
    soak_report.py check OUT WINDOW WARMUP            # has window WINDOW failed?
    soak_report.py line OUT WINDOW                    # one line on window WINDOW
    soak_report.py half REPORT                        # half a closed-loop run's rate

OUT holds window-N.json (presence-loadgen's reports), snapshots.csv (LABEL, process,
CPU ticks, RSS KiB at the end of each window; label 0 before the first) and
metrics/LABEL.SERVICE.txt (each service's /metrics at the same moments, and as
each window starts driving, LABEL WINDOW-driving). Exits 1
when the soak failed: a window with an error, a p99 after the warm-up more than twice
(and 5 ms above) its baseline (the lowest p99 of the first three windows after the
warm-up that came before it), or one of Presence's processes grown by
10 % or more between the end of the warm-up and the end.
"""

import csv
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

# Presence's own processes; Redis and the broker keep data by design and are shown only.
OWN = re.compile(r"^(presence|gateway|validator|registry)")
BROKER = re.compile(r"^tansu")
RSS_GROWTH_LIMIT = 10.0
P99_FACTOR = 2.0
# How far above its baseline's p99 (below) a later window's must also be to count as
# drift: 5 ms by default; PRESENCE_SOAK_P99_SLACK_MS widens it where the machine
# is shared (the test command's short soak), so that only a real slowdown fails.
P99_SLACK_MS = float(os.environ.get("PRESENCE_SOAK_P99_SLACK_MS", "5"))
METRIC = re.compile(r'^presence_kafka_client_(requests|records|batches|bytes)_total\{([^}]*)\} (\S+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')
# The embedded store's batch durations (`presence serve`): cumulative buckets by bound.
STORE_BUCKET = re.compile(r'^presence_store_batch_duration_seconds_bucket\{le="([^"]+)"\} (\S+)$')
# A batch slower than this holds every scan queued behind it past a good p99.
SLOW_BATCH_SECONDS = 0.1
# The request types shown in columns of their own; the rest are summed as "other".
REQUESTS = ["Produce", "Fetch", "OffsetCommit", "Heartbeat", "Metadata"]


def window_report(out, window):
    path = out / f"window-{window}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def window_problems(report):
    """What went wrong in one window, in words; empty when nothing did."""
    if report is None:
        return ["no report"]
    # The load generator's own failures: 5xx answers, requests without an answer,
    # tickets run out.
    problems = list(report.get("failures", []))
    unexpected = sum(op["unexpected"] for op in report["ops"].values())
    if unexpected:
        problems.append(f"{unexpected} answers with another status than expected")
    if not problems and not report.get("passed", False):
        problems.append("the load generator did not pass")
    return problems


def p99_ms(report):
    return report["latency_us"]["p99"] / 1000


# A window's p99 is judged against the lowest of the first BASELINE_WINDOWS after the
# warm-up that came before it: the lowest, so that one noisy early window cannot
# excuse a later slowdown; only earlier ones, so that no window is its own baseline.
BASELINE_WINDOWS = 3


def drifted(baseline, p99):
    return p99 > P99_FACTOR * baseline and p99 > baseline + P99_SLACK_MS


def baseline(p99s, warmup, window):
    """(p99, window) a window is judged against; None for the first after the warm-up.
    p99s: {window: p99 ms} of the windows run."""
    earlier = [(p99s[w], w) for w in range(warmup + 1, min(warmup + BASELINE_WINDOWS, window - 1) + 1)
               if w in p99s]
    return min(earlier, default=None)


def check_window(out, window, warmup):
    report = window_report(out, window)
    problems = window_problems(report)
    if not problems:
        reports = {w: window_report(out, w) for w in range(warmup + 1, window)}
        p99s = {w: p99_ms(r) for w, r in reports.items() if r is not None}
        base = baseline(p99s, warmup, window)
        if base is not None and drifted(base[0], p99_ms(report)):
            problems.append(
                f"p99 {p99_ms(report):.1f} ms, more than twice window {base[1]}'s {base[0]:.1f} ms "
                f"and over {P99_SLACK_MS:g} ms above it"
            )
    for problem in problems:
        print(f"window {window}: {problem}")
    return not problems


def snapshots(out):
    """{label: {process: (cpu_ticks, rss_kib)}}."""
    taken = defaultdict(dict)
    with open(out / "snapshots.csv") as f:
        for label, process, cpu, rss in csv.reader(f):
            taken[int(label)][process] = (int(cpu), int(rss))
    return taken


def kafka_counters(path):
    """{(service client, figure): value} from one /metrics page."""
    counters = {}
    if not path.exists():
        return counters
    for line in path.read_text().splitlines():
        match = METRIC.match(line)
        if not match:
            continue
        kind, labels, value = match.groups()
        labels = dict(LABEL.findall(labels))
        figure = {
            "requests": labels.get("request"),
            "records": labels.get("direction"),
            "bytes": f"bytes {labels.get('direction')}",
            "batches": "batches",
        }[kind]
        counters[(labels.get("client", "?"), figure)] = float(value)
    return counters


def kafka_delta(out, services, before, after):
    """{service: {(client, figure): increase}} between two snapshot labels."""
    deltas = {}
    for service in services:
        start = kafka_counters(out / "metrics" / f"{before}.{service}.txt")
        end = kafka_counters(out / "metrics" / f"{after}.{service}.txt")
        deltas[service] = {k: v - start.get(k, 0.0) for k, v in end.items() if v - start.get(k, 0.0) > 0}
    return deltas


def store_buckets(path):
    """{bound: batches at or under it} of the embedded store, from one /metrics page."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    return {float(m[1]): float(m[2]) for m in map(STORE_BUCKET.match, text.splitlines()) if m}


def store_batches(out, window):
    """(batches slower than SLOW_BATCH_SECONDS, the bound the slowest one was under)
    of the embedded store while one window drove its scans (from when its inventory
    was loaded, metrics/WINDOW-driving.presence.txt, to its end); None where the
    store reports no durations. Without the driving snapshot (a soak of an earlier
    script), from the end of the window before, the inventory's batches included."""
    before = (store_buckets(out / "metrics" / f"{window}-driving.presence.txt")
              or store_buckets(out / "metrics" / f"{window - 1}.presence.txt"))
    after = store_buckets(out / "metrics" / f"{window}.presence.txt")
    if not after:
        return None
    delta = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    total = delta[float("inf")]
    slow = total - delta.get(SLOW_BATCH_SECONDS, total)
    slowest = min((bound for bound, count in delta.items() if count >= total), default=float("inf"))
    return int(slow), slowest


def process_order(names):
    return sorted(names, key=lambda n: (0 if OWN.match(n) else 1 if not BROKER.match(n) else 2, n))


def window_line(out, window):
    report = window_report(out, window)
    if report is None:
        return f"window {window}: no report (see {out}/window-{window}.log)"
    latency = report["latency_us"]
    unexpected = sum(op["unexpected"] for op in report["ops"].values())
    late = (report.get("open_loop") or {}).get("late")
    try:
        load = (out / "metrics" / f"{window}.loadavg").read_text().strip()
    except OSError:
        load = "?"
    batches = store_batches(out, window)
    store = "" if batches is None else (
        f"  store batches over {SLOW_BATCH_SECONDS * 1000:g} ms {batches[0]} (slowest ≤ {batches[1]:g} s)")
    return (f"window {window}: {report['throughput_per_second']:,.0f}/s  p50 {latency['p50'] / 1000} ms  "
            f"p99 {latency['p99'] / 1000} ms  max {latency['max'] / 1000} ms  "
            f"errors {sum(report['errors'].values())}  unexpected {unexpected}  "
            f"codes {json.dumps(report['http_codes'])}  late {late}  load average {load}{store}")


def main(argv):
    command = argv[1]
    if command == "check":
        out, window, warmup = Path(argv[2]), int(argv[3]), int(argv[4])
        return 0 if check_window(out, window, warmup) else 1
    if command == "line":
        print(window_line(Path(argv[2]), int(argv[3])))
        return 0
    if command == "half":
        report = json.loads(Path(argv[2]).read_text())
        print(int(report["throughput_per_second"] // 2), report["throughput_per_second"], p99_ms(report))
        return 0
    out, windows, warmup, ticks = Path(argv[2]), int(argv[3]), int(argv[4]), int(argv[5])
    failed = False

    reports = {w: window_report(out, w) for w in range(1, windows + 1)}
    for window, report in reports.items():
        for problem in window_problems(report):
            print(f"window {window}: {problem}")
            failed = True

    judged = {w: p99_ms(r) for w, r in reports.items() if w > warmup and r is not None}
    summary = []
    if judged:
        print()
        print(f"p99 after the warm-up: {min(judged.values()):.1f} to {max(judged.values()):.1f} ms "
              f"in windows {warmup + 1} to {windows}")
        summary.append(f"p99 {min(judged.values()):.1f}–{max(judged.values()):.1f} ms")
        grown = []
        for w, ms in judged.items():
            base = baseline(judged, warmup, w)
            if base is not None and drifted(base[0], ms):
                grown.append(f"{w} ({ms:.1f} ms against window {base[1]}'s {base[0]:.1f})")
        if grown:
            print(f"p99 more than doubled in windows {', '.join(grown)}")
            failed = True
    else:
        print("\nno window after the warm-up to judge")
        failed = True

    taken = snapshots(out)
    processes = process_order({p for snap in taken.values() for p in snap})
    # The services with Kafka clients: none in embedded mode.
    services = sorted({p.name.split(".", 1)[1].removesuffix(".txt") for p in (out / "metrics").glob("*.txt")
                       if kafka_counters(p)})

    def cpu_us_per_scan(process, window):
        before, after = taken.get(window - 1, {}).get(process), taken.get(window, {}).get(process)
        report = reports.get(window)
        if before is None or after is None or not report or not report["answered"]:
            return None
        return (after[0] - before[0]) * 1e6 / ticks / report["answered"]

    def requests_per_scan(window):
        report = reports.get(window)
        if not services or not report or not report["answered"]:
            return None
        deltas = kafka_delta(out, services, window - 1, window)
        requests = sum(v for d in deltas.values() for (client, figure), v in d.items()
                       if not figure.startswith("bytes") and figure not in ("produced", "consumed", "batches"))
        return requests / report["answered"]

    def cell(value, digits=0):
        return "" if value is None else f"{value:,.{digits}f}"

    if processes:
        print()
        print("CPU per answered scan, µs (the window's CPU time, its inventory load included)"
              + (", and Kafka requests per scan from all services" if services else ""))
        print()
        timed = store_batches(out, 1) is not None
        header = ["window", "scans/s", "p99 ms"] + processes + (["Kafka requests/scan"] if services else []) + (
            [f"store batches over {SLOW_BATCH_SECONDS * 1000:g} ms", "slowest batch ≤ s"] if timed else [])
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for w in range(1, windows + 1):
            report = reports[w]
            row = [str(w), cell(report and report["throughput_per_second"]), cell(report and p99_ms(report), 1)]
            row += [cell(cpu_us_per_scan(p, w)) for p in processes]
            if services:
                row.append(cell(requests_per_scan(w), 2))
            if timed:
                slow, slowest = store_batches(out, w) or (None, None)
                row += [cell(slow), "" if slowest is None else f"{slowest:g}"]
            print("| " + " | ".join(row) + " |")

        print()
        print("RSS at the end of each window, MiB")
        print()
        print("| window | " + " | ".join(processes) + " |")
        print("|" + "---|" * (len(processes) + 1))
        for w in range(0, windows + 1):
            snap = taken.get(w, {})
            row = ["start" if w == 0 else str(w)]
            row += [cell(snap[p][1] / 1024 if p in snap else None, 1) for p in processes]
            print("| " + " | ".join(row) + " |")

        grew = []
        for p in processes:
            if not OWN.match(p):
                continue
            warm, end = taken.get(warmup, {}).get(p), taken.get(windows, {}).get(p)
            if warm and end and (end[1] - warm[1]) / warm[1] * 100 >= RSS_GROWTH_LIMIT:
                grew.append(f"{p} {warm[1] / 1024:.1f} → {end[1] / 1024:.1f} MiB")
        if grew:
            print(f"\nRSS grew by {RSS_GROWTH_LIMIT:.0f} % or more after the warm-up: {', '.join(grew)}")
            failed = True
        brokers = [p for p in processes if BROKER.match(p)]
        for broker in brokers:
            first, last = cpu_us_per_scan(broker, 1), cpu_us_per_scan(broker, windows)
            if first is not None and last is not None:
                summary.append(f"{broker} {first:,.0f} → {last:,.0f} µs/scan")

    if services:
        scans = sum(r["answered"] for r in reports.values() if r)
        deltas = kafka_delta(out, services, 0, windows)
        print()
        print(f"What each service asked of the Kafka brokers per answered scan, windows 1 to {windows} "
              f"({scans:,} scans; librdkafka's statistics, reported every 5 s)")
        print()
        columns = REQUESTS + ["other requests", "records produced", "records consumed", "batches produced",
                              "bytes sent", "bytes received"]
        print("| service | client | " + " | ".join(columns) + " |")
        print("|" + "---|" * (len(columns) + 2))
        for service in services:
            by_client = defaultdict(dict)
            for (client, figure), value in deltas[service].items():
                by_client[client][figure] = value
            for client, figures in sorted(by_client.items()):
                other = sum(v for f, v in figures.items() if f not in REQUESTS and not f.startswith("bytes")
                            and f not in ("produced", "consumed", "batches"))
                values = [figures.get(r, 0.0) for r in REQUESTS] + [other] + [
                    figures.get(f, 0.0) for f in ("produced", "consumed", "batches", "bytes sent", "bytes received")]
                digits = [3] * (len(values) - 2) + [0, 0]
                row = [service, client] + [cell(v / scans if scans else None, d) for v, d in zip(values, digits)]
                print("| " + " | ".join(row) + " |")

    (out / "summary").write_text(", ".join(summary) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
