#!/usr/bin/env bash
# test_monitoring.sh SOURCE_DIR — the alerting rules, their unit tests and
# the Grafana dashboard: promtool checks the rules and runs
# tools/prometheus/ferry.rules.test.yml; the dashboard is valid JSON; and
# every ferry_ metric the rules or the dashboard name is a family that
# docs/operations.md documents (ferryd's scrape is checked against that
# table in tests/integration/test_metrics.c), so a renamed metric cannot
# leave an alert that never fires.
set -euo pipefail
src=${1:?usage: test_monitoring.sh SOURCE_DIR}
rules=$src/tools/prometheus/ferry.rules.yml
dashboard=$src/tools/grafana/ferry-dashboard.json

command -v promtool >/dev/null || { echo "promtool missing (tools/install-deps installs prometheus)"; exit 1; }
promtool check rules "$rules"
(cd "$src/tools/prometheus" && promtool test rules ferry.rules.test.yml)

python3 - "$src/docs/operations.md" "$rules" "$dashboard" <<'PY'
import json, re, sys
doc, rules, dashboard = sys.argv[1:4]
documented = set()
for line in open(doc):
    if line.startswith("| `ferry_"):
        documented.update(re.findall(r"`(ferry_[a-z0-9_]+)`", line.split("|")[1]))
json.load(open(dashboard))  # valid JSON
used = set()
for path in (rules, dashboard):
    for name in re.findall(r"\bferry_[a-z0-9_]+", open(path).read()):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name))
unknown = sorted(n for n in used if n not in documented)
if unknown:
    sys.exit("not a documented ferry metric: " + ", ".join(unknown))
print(f"monitoring: {len(used)} metrics used, all documented ({len(documented)} families)")
PY
