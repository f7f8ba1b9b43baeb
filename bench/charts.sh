#!/usr/bin/env bash
# bench/charts.sh — draws bench/charts/*.png from bench/results/*.csv with
# gnuplot (Debian's gnuplot-nox). bench/scenarios.sh runs it after each run;
# it reads only the CSV files, so it can be run again at any time.
#
#   accept.png   accepting mail: msgs/s and end of DATA -> 250 latency per run
#   relay.png    end to end: accepted and delivered msgs/s, latency per run
#   etrn.png     draining 100,000 held messages: msgs/s and first delivery
#                per run, ETRN beside ferryctl flush
#   postfix.png  ferry (median of its recorded runs) beside the Postfix
#                figures of bench/results/postfix.csv (quoted from the
#                issues, not measured here), where both exist
#
# A chart is drawn when its CSV has rows; each shows the last 10 runs.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v gnuplot >/dev/null || {
	echo "bench/charts.sh: gnuplot is not installed (tools/install-deps installs gnuplot-nox)" >&2
	exit 1
}
results=bench/results
out=bench/charts
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The data the charts plot, one file per chart in $tmp (x = round), and
# for each a gnuplot file of settings: x tics, title parts, caption.
python3 - "$results" "$tmp" <<'PY'
import csv, os, statistics, sys

results, tmp = sys.argv[1:3]
LAST = 10


def rows(scenario, label):
    path = os.path.join(results, scenario + ".csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["label"] == label][-LAST:]


def num(r, key):
    try:
        return float(r[key])
    except (KeyError, TypeError, ValueError):
        return None


def gp_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def tic(r):
    # 2026-12-03T16:13:32Z -> 12-03 16:13:32, then the commit
    return f"{r['date_utc'][5:10]} {r['date_utc'][11:19]}\\n{r['commit']}"


def caption(all_rows, files):
    """Names the machine and the commits of what a chart shows."""
    machines = sorted({f"{r['cpus']} CPUs, {r['cpu_model']}" for r in all_rows})
    commits = sorted({r["commit"] for r in all_rows})
    dates = sorted(r["date_utc"] for r in all_rows)
    span = dates[0][:16].replace("T", " ")
    if dates[-1][:10] != dates[0][:10]:
        span += " to " + dates[-1][:16].replace("T", " ")
    elif dates[-1][:16] != dates[0][:16]:
        span += "-" + dates[-1][11:16]
    return (f"{'; '.join(machines)}, shared with other work (loopback, noisy: ±20 % run to run). "
            f"Commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}; runs {span} UTC.\n"
            f"Data: {', '.join(files)}")


def write(name, header, lines, settings):
    with open(os.path.join(tmp, name + ".dat"), "w") as f:
        f.write("# " + " ".join(header) + "\n")
        for line in lines:
            f.write(" ".join("?" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
                             for v in line) + "\n")
    with open(os.path.join(tmp, name + ".gp"), "w") as f:
        for key, value in settings.items():
            f.write(f"{key} = {value}\n")


def xtics(primary):
    return ("set xtics (" + ", ".join(f'"{tic(r)}" {i + 1}' for i, r in enumerate(primary))
            + ")")


def ymax(lines, columns, floor=0):
    """Room above the tallest bar (or a target line, the floor) for its label and the key."""
    values = [line[c] for line in lines for c in columns if line[c] is not None] + [floor]
    return f"{max(values) * 1.3:g}" if max(values) > 0 else "1"


def by_round(series, keys):
    """Round i of every series side by side: each series' i-th last row."""
    n = max(len(s) for s in series)
    return [[i + 1] + [num(s[i], k) if i < len(s) else None for s in series for k in keys]
            for i in range(n)]


# accept: pipelined and --no-pipelining, rows of one invocation.
pip, nop = rows("accept", "pipelined"), rows("accept", "no-pipelining")
if pip or nop:
    keys = ["msgs_per_sec", "p50_ms", "p99_ms"]
    lines = by_round([pip, nop], keys)
    write("accept", ["round"] + [f"{m}_{k}" for m in ("pip", "nop") for k in keys], lines,
          {"tics": gp_string(xtics(pip or nop)), "xmax": len(lines) + 0.6,
           "ymax1": ymax(lines, [1, 4], 20000), "ymax2": ymax(lines, [2, 3, 5, 6]),
           "caption": gp_string(caption(pip + nop, ["bench/results/accept.csv"]))})

relay = rows("relay", "1 KiB, 100 sessions")
if relay:
    keys = ["accepted_msgs_per_sec", "delivered_msgs_per_sec", "p50_ms", "p99_ms"]
    lines = by_round([relay], keys)
    write("relay", ["round"] + keys, lines,
          {"tics": gp_string(xtics(relay)), "xmax": len(lines) + 0.6,
           "ymax1": ymax(lines, [1, 2], 15000), "ymax2": ymax(lines, [3, 4]),
           "caption": gp_string(caption(relay, ["bench/results/relay.csv"]))})

etrn, drain = rows("etrn", "ETRN over SMTP"), rows("drain", "ferryctl flush")
if etrn or drain:
    keys = ["msgs_per_sec", "first_ms"]
    lines = by_round([etrn, drain], keys)
    write("etrn", ["round"] + [f"{m}_{k}" for m in ("etrn", "drain") for k in keys], lines,
          {"tics": gp_string(xtics(etrn or drain)), "xmax": len(lines) + 0.6,
           "ymax1": ymax(lines, [1, 3], 20000), "ymax2": ymax(lines, [2, 4], 50),
           "paired": gp_string("x tics: the ETRN run's date and commit; the i-th flush run is "
                               "drawn beside the i-th ETRN run" if etrn and drain else ""),
           "caption": gp_string(caption(etrn + drain, ["bench/results/etrn.csv",
                                                       "bench/results/drain.csv"]))})

# ferry beside Postfix: each postfix.csv figure whose scenario, label and
# column ferry's CSV has, ferry's value the median of its last runs.
postfix_path = os.path.join(results, "postfix.csv")
pairs = {"messages/s": [], "ms": []}
used = []
NAMES = {"accept": "accept\\n100 sessions", "scale": "accept\\n200 sessions",
         "relay": "relay\\nend to end", "drain": "drain\\nferryctl flush", "etrn": "drain\\nETRN"}
if os.path.exists(postfix_path):
    with open(postfix_path, newline="") as f:
        for p in csv.DictReader(f):
            ferry = [v for v in (num(r, p["figure"]) for r in rows(p["scenario"], p["label"]))
                     if v is not None]
            if not ferry or p["unit"] not in pairs:
                continue
            used += rows(p["scenario"], p["label"])
            name = NAMES.get(p["scenario"], p["scenario"])
            pairs[p["unit"]].append((name, statistics.median(ferry), len(ferry), float(p["value"])))
for unit, name in (("messages/s", "postfix_rate"), ("ms", "postfix_first")):
    if pairs[unit]:
        lines = [[i + 1, f, n, pf] for i, (_, f, n, pf) in enumerate(pairs[unit])]
        tics = ", ".join(f'"{label}" {i + 1}' for i, (label, *_) in enumerate(pairs[unit]))
        write(name, ["x", "ferry_median", "ferry_runs", "postfix"], lines,
              {"tics": gp_string(f"set xtics ({tics})"), "xmax": len(lines) + 0.6,
               "ymax1": ymax(lines, [1, 3])})
if used:
    files = sorted({f"bench/results/{r['scenario']}.csv" for r in used})
    with open(os.path.join(tmp, "postfix.gp"), "w") as f:
        f.write("caption = " + gp_string("ferry: " + caption(used, files + ["bench/results/postfix.csv"])) + "\n")
PY

# Shared look: one font, light grid, bars with their value above them, a
# target as a dashed red line in the key, the caption at the bottom.
common='
set terminal pngcairo size 1100,820 font "DejaVu Sans,11" noenhanced
set datafile missing "?"
set grid ytics lc rgb "#dddddd"
set border 3
set tics nomirror
set xtics scale 0
set key top left horizontal samplen 2 width 1
set style fill solid 0.85 noborder
set format y "%.0f"
set style textbox opaque noborder margins 1,1
target = "dt 2 lw 1.5 lc rgb \"#cc0000\""
'
# The two-row layout of the per-run charts; TITLE is the chart's.
rows() {
	echo "set multiplot layout 2,1 margins 0.09,0.98,0.19,0.9 spacing 0,0.13 title \"$1\" font \",14\""
	echo 'set label 9 caption at screen 0.01, screen 0.05 font ",9"'
}
drawn=()

if [[ -f $tmp/accept.dat ]]; then
	gnuplot <<GP
$common
load "$tmp/accept.gp"
set output "$out/accept.png"
$(rows "ferryd accepting mail: ferry-bench -c 100 -n 20000 -s 1024, durable (the 250 after fdatasync)")
@tics
set xrange [0.4:xmax]
set yrange [0:ymax1]
set title "Throughput per run (bench/scenarios.sh accept)"
set ylabel "messages accepted per second"
plot "$tmp/accept.dat" using (\$1-0.2):2:(0.38) with boxes lc rgb "#3c78b4" title "pipelined", \
     "" using (\$1+0.2):5:(0.38) with boxes lc rgb "#8cb4dc" title "--no-pipelining", \
     20000 with lines @target title "target: 20,000 msgs/s (issue 3)", \
     "" using (\$1-0.2):2:(sprintf("%.0f", \$2)) with labels boxed offset 0,0.7 notitle, \
     "" using (\$1+0.2):5:(sprintf("%.0f", \$5)) with labels boxed offset 0,0.7 notitle
unset label 9
set title "Latency per run: end of DATA (the final dot) to the 250 reply"
set ylabel "latency (ms)"
set format y "%.1f"
set yrange [0:ymax2]
plot "$tmp/accept.dat" using (\$1-0.3):3:(0.18) with boxes lc rgb "#8cb4dc" title "p50, pipelined", \
     "" using (\$1-0.1):4:(0.18) with boxes lc rgb "#3c78b4" title "p99, pipelined", \
     "" using (\$1+0.1):6:(0.18) with boxes lc rgb "#f0b48c" title "p50, --no-pipelining", \
     "" using (\$1+0.3):7:(0.18) with boxes lc rgb "#d2691e" title "p99, --no-pipelining", \
     "" using (\$1-0.3):3:(sprintf("%.1f", \$3)) with labels boxed offset 0,0.7 notitle, \
     "" using (\$1-0.1):4:(sprintf("%.1f", \$4)) with labels boxed offset 0,0.7 notitle, \
     "" using (\$1+0.1):6:(sprintf("%.1f", \$6)) with labels boxed offset 0,0.7 notitle, \
     "" using (\$1+0.3):7:(sprintf("%.1f", \$7)) with labels boxed offset 0,0.7 notitle
unset multiplot
GP
	drawn+=("$out/accept.png")
fi

if [[ -f $tmp/relay.dat ]]; then
	gnuplot <<GP
$common
load "$tmp/relay.gp"
set output "$out/relay.png"
$(rows "End to end: ferry-bench -> ferryd -> ferry-bench sink, 100,000 messages of 1 KiB, 100 sessions")
@tics
set xrange [0.4:xmax]
set yrange [0:ymax1]
set title "Throughput per run (bench/scenarios.sh relay): accepted (ferry-bench), delivered (the sink, first connection to last message)"
set ylabel "messages per second"
plot "$tmp/relay.dat" using (\$1-0.2):2:(0.38) with boxes lc rgb "#8cb4dc" title "accepted", \
     "" using (\$1+0.2):3:(0.38) with boxes lc rgb "#3c78b4" title "delivered", \
     15000 with lines @target title "target: 15,000 msgs/s delivered (issue 9)", \
     "" using (\$1-0.2):2:(sprintf("%.0f", \$2)) with labels boxed offset 0,0.7 notitle, \
     "" using (\$1+0.2):3:(sprintf("%.0f", \$3)) with labels boxed offset 0,0.7 notitle
unset label 9
set title "Latency per run while relaying: end of DATA to the 250 reply"
set ylabel "latency (ms)"
set format y "%.1f"
set yrange [0:ymax2]
plot "$tmp/relay.dat" using (\$1-0.2):4:(0.38) with boxes lc rgb "#8cb4dc" title "p50", \
     "" using (\$1+0.2):5:(0.38) with boxes lc rgb "#3c78b4" title "p99", \
     "" using (\$1-0.2):4:(sprintf("%.1f", \$4)) with labels boxed offset 0,0.7 notitle, \
     "" using (\$1+0.2):5:(sprintf("%.1f", \$5)) with labels boxed offset 0,0.7 notitle
unset multiplot
GP
	drawn+=("$out/relay.png")
fi

if [[ -f $tmp/etrn.dat ]]; then
	gnuplot <<GP
$common
load "$tmp/etrn.gp"
set output "$out/etrn.png"
$(rows "Draining 100,000 held 1 KiB messages for one domain into the sink")
set label 8 paired at screen 0.09, screen 0.1 font ",9"
@tics
set xrange [0.4:xmax]
set yrange [0:ymax1]
set title "Drain rate per run: messages over the time from the release to the last delivery"
set ylabel "messages per second"
plot "$tmp/etrn.dat" using (\$1-0.2):2:(0.38) with boxes lc rgb "#3c78b4" title "ETRN over SMTP (scenarios.sh etrn)", \
     "" using (\$1+0.2):4:(0.38) with boxes lc rgb "#8cb4dc" title "ferryctl flush (scenarios.sh drain)", \
     20000 with lines @target title "target: 20,000 msgs/s (issues 9, 10)", \
     "" using (\$1-0.2):2:(sprintf("%.0f", \$2)) with labels boxed offset 0,0.7 notitle, \
     "" using (\$1+0.2):4:(sprintf("%.0f", \$4)) with labels boxed offset 0,0.7 notitle
unset label 9
unset label 8
set title "First delivery per run: after the 253 reply (ETRN), after starting ferryctl flush (drain)"
set ylabel "first delivery (ms)"
set yrange [0:ymax2]
plot "$tmp/etrn.dat" using (\$1-0.2):3:(0.38) with boxes lc rgb "#3c78b4" title "ETRN", \
     "" using (\$1+0.2):5:(0.38) with boxes lc rgb "#8cb4dc" title "ferryctl flush", \
     50 with lines @target title "target: under 50 ms", \
     "" using (\$1-0.2):3:(sprintf("%.1f", \$3)) with labels boxed offset 0,0.7 notitle, \
     "" using (\$1+0.2):5:(sprintf("%.1f", \$5)) with labels boxed offset 0,0.7 notitle
unset multiplot
GP
	drawn+=("$out/etrn.png")
fi

# ferry beside Postfix: throughput, and first delivery when there is a pair.
postfix_panel() { # DATA TITLE YLABEL FORMAT LEFT RIGHT (screen fractions)
	cat <<GP
load "$tmp/$1.gp"
set lmargin at screen $5
set rmargin at screen $6
set tmargin at screen 0.86
set bmargin at screen 0.27
@tics
set xrange [0.4:xmax]
set yrange [0:ymax1]
set title "$2"
set ylabel "$3"
plot "$tmp/$1.dat" using (\$1-0.2):2:(0.38) with boxes lc rgb "#3c78b4" title "ferry (measured here)", \
     "" using (\$1+0.2):4:(0.38) with boxes lc rgb "#e08030" title "Postfix (quoted, not measured)", \
     "" using (\$1-0.2):2:(sprintf("$4 (%d)", \$2, \$3)) with labels boxed offset 0,0.7 notitle, \
     "" using (\$1+0.2):4:(sprintf("%.0f", \$4)) with labels boxed offset 0,0.7 notitle
unset label 9
unset label 8
GP
}
if [[ -f $tmp/postfix_rate.dat ]]; then
	split=0.98 # the throughput panel takes the width the other leaves
	[[ -f $tmp/postfix_first.dat ]] && split=0.62
	gnuplot <<GP
$common
load "$tmp/postfix.gp"
set output "$out/postfix.png"
set multiplot title "ferry beside Postfix. Postfix's figures are quoted from the issues (bench/results/postfix.csv): not measured here" font ",13"
set key top right vertical
set label 9 caption at screen 0.01, screen 0.05 font ",9"
set label 8 "ferry: the median of its recorded runs (the number of runs in brackets). Postfix: figures stated in issues 2, 3, 9 and 10; its ETRN drained\n5,000 messages (ferry: 100,000), its flush a deferred backlog of unstated size. ferry's ETRN first delivery is counted from sending ETRN here." at screen 0.01, screen 0.125 font ",9"
$(postfix_panel postfix_rate "Throughput" "messages per second" "%.0f" 0.08 "$split")
$([[ $split != 0.98 ]] && postfix_panel postfix_first "First delivery after the request" "first delivery (ms)" "%.1f" 0.71 0.98)
unset multiplot
GP
	drawn+=("$out/postfix.png")
fi

if ((${#drawn[@]} == 0)); then
	echo "bench/charts.sh: no figures in $results/*.csv yet: run bench/scenarios.sh first"
else
	echo "charts: ${drawn[*]}"
fi
