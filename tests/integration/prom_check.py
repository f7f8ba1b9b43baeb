#!/usr/bin/env python3
"""prom_check — what the metrics test asks of ferryd's /metrics and of a real
Prometheus scraping it, on loopback only. Every wait is bounded.

  prom_check.py watch URL OUT SECONDS
      Scrape URL every 0.3 s for SECONDS: every counter (a family whose TYPE
      is counter, and a histogram's _bucket, _sum and _count) must never go
      down from one scrape to the next. The last scrape is saved to OUT (for
      promtool). Prints "ok SCRAPES" or what went down; exit status 1 then.

  prom_check.py ready PROM SECONDS
      Wait until Prometheus answers /-/ready and its target is up.

  prom_check.py query PROM EXPR [UNIXTIME]
      Print the value of an instant PromQL query (one series expected).

  prom_check.py range PROM EXPR START END
      A range query at 1 s steps: every series must be non-decreasing.
      Prints "ok POINTS" or the first decrease.

  prom_check.py documented OPERATIONS_MD SCRAPE
      Every family of docs/operations.md's Metrics table is in the scrape,
      and every ferry_ family of the scrape is in the table.
"""
import json
import sys
import time
import urllib.parse
import urllib.request


def fetch(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def parse_counters(text):
    """Sample name+labels -> value, for counter families and histograms."""
    kinds = {}
    values = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            kinds[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name = key.split("{", 1)[0]
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and kinds.get(name[: -len(suffix)]) == "histogram":
                family = name[: -len(suffix)]
        if kinds.get(family) in ("counter", "histogram"):
            values[key] = float(value)
    return values


def watch(url, out, seconds):
    end = time.time() + seconds
    last, scrapes, text = {}, 0, ""
    while time.time() < end:
        status, text = fetch(url)
        if status != 200:
            print(f"scrape answered {status}")
            return 1
        now = parse_counters(text)
        for key, value in now.items():
            if key in last and value < last[key]:
                print(f"{key} went down: {last[key]} -> {value}")
                return 1
        for key in last:
            if key not in now:
                print(f"{key} disappeared")
                return 1
        last = now
        scrapes += 1
        time.sleep(0.3)
    with open(out, "w") as f:
        f.write(text)
    print(f"ok {scrapes}")
    return 0


def api(prom, path, **params):
    url = f"{prom}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    status, body = fetch(url)
    data = json.loads(body)
    if data.get("status") != "success":
        raise SystemExit(f"query failed: {body}")
    return data["data"]["result"]


def ready(prom, seconds):
    end = time.time() + seconds
    while time.time() < end:
        try:
            if fetch(f"{prom}/-/ready", timeout=2)[0] == 200:
                up = api(prom, "query", query='up{job="ferry"}')
                if up and up[0]["value"][1] == "1":
                    print("ok")
                    return 0
        except OSError:
            pass
        time.sleep(0.3)
    print("prometheus not ready, or its target not up")
    return 1


def query(prom, expr, at=None):
    params = {"query": expr}
    if at is not None:
        params["time"] = at
    result = api(prom, "query", **params)
    if len(result) != 1:
        print(f"expected one series, got {len(result)}: {result}")
        return 1
    print(result[0]["value"][1])
    return 0


def range_check(prom, expr, start, end):
    result = api(prom, "query_range", query=expr, start=start, end=end, step="1")
    points = 0
    for series in result:
        values = [float(v) for _, v in series["values"]]
        for a, b in zip(values, values[1:]):
            if b < a:
                print(f"{series['metric']} went down: {a} -> {b}")
                return 1
        points += len(values)
    if points == 0:
        print("no points")
        return 1
    print(f"ok {points}")
    return 0


def documented(doc, scrape):
    import re
    table = set()
    for line in open(doc):
        if line.startswith("| `ferry_"):
            table.update(re.findall(r"`(ferry_[a-z0-9_]+)`", line.split("|")[1]))
    served = set(re.findall(r"^# HELP (ferry_[a-z0-9_]+) ", open(scrape).read(), re.M))
    missing, undocumented = sorted(table - served), sorted(served - table)
    if missing or undocumented:
        print(f"documented, not served: {missing}; served, not documented: {undocumented}")
        return 1
    print(f"ok {len(table)}")
    return 0


def main(argv):
    cmd = argv[1]
    if cmd == "watch":
        return watch(argv[2], argv[3], float(argv[4]))
    if cmd == "ready":
        return ready(argv[2], float(argv[3]))
    if cmd == "query":
        return query(argv[2], argv[3], argv[4] if len(argv) > 4 else None)
    if cmd == "range":
        return range_check(argv[2], argv[3], argv[4], argv[5])
    if cmd == "documented":
        return documented(argv[2], argv[3])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
