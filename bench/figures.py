#!/usr/bin/env python3
"""bench/figures.py: the figures of bench/scenarios.sh, from ferry-bench's --json.

  figures.py load JSON FIGURES 'ARGS'   print ferry-bench's load summary from its
                                        --json object, write the run's figures
  figures.py idle JSON FIGURES          the same for `ferry-bench idle --json`
  figures.py record CSV DATE COMMIT SCENARIO LABEL FIGURES
                                        append FIGURES as one row of CSV

scenarios.sh runs ferry-bench with --json so that its figures need no parsing
of text, and prints the same summary ferry-bench prints without --json (the
format of load_print_human and idle_print_human in bench/ferry_bench.c: keep
them alike). FIGURES is a JSON object whose keys, in order, are the CSV's
columns after the common ones; a file whose header differs is left alone.
DATE is when scenarios.sh started (UTC, ISO 8601), the same for every row of
one invocation: with COMMIT, it tells which rows were run together.
"""
import csv
import json
import os
import sys

COMMON = ["date_utc", "commit", "cpus", "cpu_model", "scenario", "label"]


def plural(n):
    return "" if n == 1 else "s"


def read_report(path):
    """The last line of ferry-bench's stdout, or None when it printed none."""
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def latency_line(name, l, what):
    if l["samples"] == 0:
        return f"  {name:<10} no samples"
    return (f"  {name:<10} p50 {l['p50']:.3f} ms, p90 {l['p90']:.3f} ms, p99 {l['p99']:.3f} ms, "
            f"max {l['max']:.3f} ms  ({what}, {l['samples']} samples)")


def write_figures(path, figures):
    with open(path, "w") as f:
        json.dump(figures, f)


def load(json_path, figures_path, args):
    r = read_report(json_path)
    if r is None:
        return
    args = args.split()
    if "-P" in args or "--no-pipelining" in args:
        pipelining = "off (-P)"
    elif r["pipelining"]:
        pipelining = "on"
    else:  # the JSON has no EHLO count: a connection stands for it
        pipelining = "off (server did not offer PIPELINING)" if r["connected"] else "not negotiated"
    rate = args[args.index("--rate") + 1] if "--rate" in args else None
    lat = r["latency_ms"]
    print(f"ferry-bench load: {r['target']}, {r['sessions']} session{plural(r['sessions'])} on "
          f"{r['threads']} thread{plural(r['threads'])}, pipelining {pipelining}")
    print(f"  messages   {r['messages_sent']} sent, {r['messages_accepted']} accepted, "
          f"{r['messages_failed']} failed ({r['messages_requested']} requested, "
          f"{r['message_size']} bytes each, {r['rcpts']} rcpt{plural(r['rcpts'])})")
    print(f"  time       {r['seconds']:.3f} s, {r['msgs_per_sec']:.1f} msgs/s, "
          f"{r['bytes'] / 1e6:.1f} MB written")
    if rate:
        print(f"  offered    {rate} msgs/s (--rate)")
    print(latency_line("latency", lat, "final dot to reply"))
    print(latency_line("connect", r["connect_ms"], "connect to 220 banner"))
    print("  failures   " + ", ".join(f"{k} {v}" for k, v in r["failures"].items()))
    print(f"  sessions   {r['connected']} connected, {r['reconnects']} reconnects")
    if r["timed_out"]:
        timeout = args[args.index("--timeout") + 1] if "--timeout" in args else "?"
        print(f"  stopped    by --timeout after {timeout} s")
    elif r["interrupted"]:
        print("  stopped    by signal")
    figures = {"msgs_per_sec": round(r["msgs_per_sec"], 1)}
    if rate:
        figures["offered_msgs_per_sec"] = int(rate)
    figures.update({
        "p50_ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"], "max_ms": lat["max"],
        "sessions": r["sessions"], "messages": r["messages_requested"],
        "accepted": r["messages_accepted"], "failed": r["messages_failed"],
        "seconds": round(r["seconds"], 3),
    })
    write_figures(figures_path, figures)


def idle(json_path, figures_path):
    r = read_report(json_path)
    if r is None:
        return
    f = r["failures"]
    print(f"ferry-bench idle: {r['target']}, {r['sessions']} session{plural(r['sessions'])}")
    print(f"  opened     {r['established']} connected, {r['banners']} banners, {r['ehlo_ok']} "
          f"EHLO ok in {r['seconds']:.3f} s{' (stopped by --timeout)' if r['timed_out'] else ''}")
    print(f"  failures   connect {f['connect']}, banner {f['banner']}, ehlo {f['ehlo']}, "
          f"dropped while held {r['dropped']}")
    print(latency_line("connect", r["connect_ms"], "connect to 220 banner"))
    if "pid" in r:
        print(f"  server     pid {r['pid']} VmRSS {r['rss_before_kb']} kB before, "
              f"{r['rss_after_kb']} kB after: {r['rss_per_session_kb']:.2f} KiB per session")
    print(f"  held       {r['hold_seconds']} s")
    write_figures(figures_path, {
        "kib_per_session": r.get("rss_per_session_kb", ""),
        "rss_before_kb": r.get("rss_before_kb", ""), "rss_after_kb": r.get("rss_after_kb", ""),
        "sessions": r["sessions"], "ehlo_ok": r["ehlo_ok"], "seconds": round(r["seconds"], 3),
    })


def machine():
    """nproc's count (the CPUs this process may run on) and the first model name."""
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return len(os.sched_getaffinity(0)), model


def record(csv_path, date, commit, scenario, label, figures_path):
    with open(figures_path) as f:
        figures = json.load(f)
    header = COMMON + list(figures)
    if os.path.exists(csv_path) and os.path.getsize(csv_path) > 0:
        with open(csv_path, newline="") as f:
            existing = next(csv.reader(f))
        if existing != header:
            print(f"{csv_path} has other columns than this run's "
                  f"({','.join(header)}); row not recorded", file=sys.stderr)
            return
        write_header = False
    else:
        os.makedirs(os.path.dirname(csv_path) or ".", exist_ok=True)
        write_header = True
    cpus, model = machine()
    with open(csv_path, "a", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        if write_header:
            out.writerow(header)
        out.writerow([date, commit, cpus, model, scenario, label] + list(figures.values()))


def main(argv):
    usage = __doc__.split("\n\n")[0]
    if len(argv) == 4 and argv[0] == "load":
        load(*argv[1:])
    elif len(argv) == 3 and argv[0] == "idle":
        idle(*argv[1:])
    elif len(argv) == 7 and argv[0] == "record":
        record(*argv[1:])
    else:
        print(usage, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
