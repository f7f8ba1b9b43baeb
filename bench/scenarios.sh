#!/usr/bin/env bash
# bench/scenarios.sh — the ferryd benchmark runs recorded in bench/RESULTS.md.
# Starts a Release ferryd on 127.0.0.1:PORT with bench/conf/bench.conf and a
# fresh spool on the same disk as the checkout, runs ferry-bench against it,
# and stops it. Loopback only; every run is bounded by ferry-bench --timeout.
#
#   bench/scenarios.sh [accept|latency|scale|idle|restart|attack|relay|drain|etrn|reload|fsync|all|charts]
#
# relay sends through ferryd to `ferry-bench sink` (a domain's transport),
# drain holds 100,000 messages for one domain, then flushes them to the
# sink, and etrn does the same with an RFC 1985 ETRN over SMTP instead of
# ferryctl flush; all three start the sink on PORT+1.
#
# restart fills the spool with 1,000,000 messages (about 1.4 GB of disk),
# and attack runs 10,000 attackers of each kind beside a load, with ferryd
# at its production limits (bench/conf/attack.conf): neither is part of
# `all`. Nor is reload: 20,000 [domain] sections with quotas and 100,000
# queued messages, reloaded while idle (each worker's switch timed) and
# every second under a paced load (its latency beside the same load
# without reloads).
#
# Every scenario but attack also appends its figures to
# bench/results/SCENARIO.csv (one row per ferry-bench run, the header once;
# bench/figures.py), and then bench/charts.sh redraws the PNG charts in
# bench/charts/ from those files. `charts` only redraws them.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
case $what in
accept | latency | scale | idle | restart | attack | relay | drain | etrn | reload | fsync | all) ;;
charts) exec bench/charts.sh ;;
*)
	echo "usage: bench/scenarios.sh [accept|latency|scale|idle|restart|attack|relay|drain|etrn|reload|fsync|all|charts]" >&2
	exit 2
	;;
esac
port=${FERRY_BENCH_PORT:-2599}
build=${FERRY_BUILD_DIR:-build}
work=$(mktemp -d "$PWD/.bench-XXXXXX")
pid=
sink_pid=
sink_port=$((port + 1))
cleanup() {
	[[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	[[ -n "$sink_pid" ]] && kill "$sink_pid" 2>/dev/null && wait "$sink_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# Where each run's figures go, and the commit they are of: the checkout's,
# marked -dirty when its files (other than the figures and charts
# themselves) differ from it. FERRY_BENCH_COMMIT names another, for
# binaries built elsewhere (FERRY_BUILD_DIR).
results=bench/results
run_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=${FERRY_BENCH_COMMIT:-}
if [[ -z $commit ]]; then
	commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	git diff --quiet HEAD -- . ':(exclude)bench/results' ':(exclude)bench/charts' 2>/dev/null ||
		commit+=-dirty
fi
recorded=()

# record SCENARIO LABEL: $work/figures.json, the last run's figures, as a
# row of bench/results/SCENARIO.csv.
record() {
	if [[ ! -s $work/figures.json ]]; then
		echo "($1, $2: no figures to record)"
		return 0
	fi
	python3 bench/figures.py record "$results/$1.csv" "$run_date" "$commit" "$1" "$2" \
		"$work/figures.json"
	rm -f "$work/figures.json"
	[[ " ${recorded[*]} " == *" $results/$1.csv "* ]] || recorded+=("$results/$1.csv")
}

# start_ferryd [CONF [EXTRA]]: CONF (default bench/conf/bench.conf) with
# this run's listen address and spool, then the EXTRA lines.
start_ferryd() {
	rm -rf "$work/spool"
	{
		printf '[server]\nlisten = 127.0.0.1:%s\n\n[spool]\ndirectory = %s\n\n' "$port" "$work/spool"
		cat "${1:-bench/conf/bench.conf}"
		printf '%b' "${2:-}"
	} >"$work/ferry.conf"
	"$build/ferryd" -c "$work/ferry.conf" 2>"$work/ferryd.log" &
	pid=$!
	for _ in $(seq 100); do
		(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
		sleep 0.05
	done
	echo "ferryd did not start:" >&2
	cat "$work/ferryd.log" >&2
	exit 1
}

stop_ferryd() {
	kill -TERM "$pid" 2>/dev/null || echo "ferryd had already exited"
	wait "$pid" || echo "ferryd exit status $?"
	pid=
}

# What ferryd logged (at warn and above), by event.
ferryd_log_summary() {
	echo "ferryd log: $(wc -l <"$work/ferryd.log") lines"
	grep -o 'event=[a-z_]*' "$work/ferryd.log" | sort | uniq -c | sort -rn | head -5 || true
}

machine() {
	echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs, $(uname -r)," \
		"$(findmnt -no FSTYPE -T .) spool, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
}

# The disk's rate of single appending fdatasyncs, for context.
fsync_rate() {
	python3 - "$work" <<'PY'
import json, os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
n, t0 = 0, time.time()
while time.time() - t0 < 3:
    os.write(fd, b"x" * 1024)
    os.fdatasync(fd)
    n += 1
os.close(fd)
os.unlink(path)
rate = n / (time.time() - t0)
print(f"fsync probe: {rate:.0f} appending fdatasync/s (1 KiB each, one thread)")
json.dump({"fdatasync_per_sec": round(rate), "seconds": 3}, open(os.path.join(sys.argv[1], "figures.json"), "w"))
PY
	record fsync "1 KiB, one thread"
}

# bench ARGS: one ferry-bench load, its summary printed as ferry-bench
# prints it, its figures left in $work/figures.json (for record).
bench() {
	echo "\$ ferry-bench $*"
	local status=0
	rm -f "$work/figures.json"
	"$build/ferry-bench" "$@" --timeout 120 --json "127.0.0.1:$port" >"$work/load.json" ||
		status=$?
	python3 bench/figures.py load "$work/load.json" "$work/figures.json" "$* --timeout 120"
	((status == 0)) || echo "(ferry-bench: some messages failed, exit status $status)"
}

machine
case $what in fsync | all) fsync_rate ;; esac
case $what in accept | all)
	start_ferryd
	bench -c 100 -n 20000 -s 1024
	record accept pipelined
	bench -c 100 -n 20000 -s 1024 --no-pipelining
	record accept no-pipelining
	stop_ferryd
	;;
esac
case $what in latency | all)
	start_ferryd
	bench -c 100 -n 100000 -s 1024 --rate 10000
	record latency "offered 10000/s"
	stop_ferryd
	;;
esac
case $what in scale | all)
	start_ferryd
	for c in 100 200 1000; do
		bench -c "$c" -n 20000 -s 1024
		record scale "$c sessions"
	done
	stop_ferryd
	;;
esac
case $what in idle | all)
	start_ferryd # fresh: resident memory only grows
	rm -f "$work/figures.json"
	"$build/ferry-bench" idle -c 10000 --pid "$pid" --json "127.0.0.1:$port" >"$work/idle.json" ||
		echo "(ferry-bench idle: exit status $?)"
	python3 bench/figures.py idle "$work/idle.json" "$work/figures.json"
	record idle "10000 sessions"
	stop_ferryd
	;;
esac
case $what in restart)
	start_ferryd
	bench -c 100 -n 1000000 -s 1024
	mv "$work/figures.json" "$work/fill.json" 2>/dev/null || true
	stop_ferryd
	declare -A accepting_ms=()
	# Time from exec to accepting connections, with the whole queue rebuilt:
	# once with the segments in the page cache, once cold (when allowed).
	for cache in warm cold; do
		if [[ $cache == cold ]]; then
			sync
			echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || {
				echo "restart (cold): cannot drop the page cache here, skipped"
				break
			}
		fi
		t0=$(date +%s%N)
		"$build/ferryd" -c "$work/ferry.conf" 2>"$work/ferryd.log" &
		pid=$!
		# Bounded: 60 s, six times the restart target.
		for ((tries = 0; tries < 6000; tries++)); do
			(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
			sleep 0.01
			kill -0 "$pid" 2>/dev/null || { cat "$work/ferryd.log" >&2; exit 1; }
		done
		((tries < 6000)) || { echo "ferryd did not accept within 60 s" >&2; exit 1; }
		t1=$(date +%s%N)
		accepting_ms[$cache]=$(((t1 - t0) / 1000000))
		echo "restart ($cache page cache): accepting connections ${accepting_ms[$cache]} ms after exec"
		grep 'listening on' "$work/ferryd.log" || true
		stop_ferryd
	done
	echo "spool: $(du -sh "$work/spool/segments" | cut -f1) in $(ls "$work/spool/segments" | wc -l) segments"
	python3 - "$work/fill.json" "${accepting_ms[warm]:-}" "${accepting_ms[cold]:-}" \
		"$(du -sb "$work/spool/segments" | cut -f1)" "$(ls "$work/spool/segments" | wc -l)" \
		>"$work/figures.json" <<'PY'
import json, os, sys
fill = json.load(open(sys.argv[1])) if os.path.exists(sys.argv[1]) else {}
warm, cold, spool_bytes, segments = sys.argv[2:6]
print(json.dumps({"warm_ms": warm, "cold_ms": cold, "messages": fill.get("messages", ""),
                  "fill_msgs_per_sec": fill.get("msgs_per_sec", ""), "fill_p99_ms": fill.get("p99_ms", ""),
                  "fill_max_ms": fill.get("max_ms", ""), "spool_bytes": spool_bytes, "segments": segments}))
PY
	record restart "1000000 messages"
	;;
esac
# start_sink N: ferry-bench sink on 127.0.0.1:$sink_port until it has N
# messages (bounded: 300 s); its JSON report goes to $work/sink.json.
start_sink() {
	"$build/ferry-bench" sink -t 2 --json --count "$1" --duration 300 "127.0.0.1:$sink_port" \
		>"$work/sink.json" 2>/dev/null &
	sink_pid=$!
	for _ in $(seq 100); do
		(exec 3<>/dev/tcp/127.0.0.1/$sink_port) 2>/dev/null && return 0
		sleep 0.05
	done
	echo "the sink did not start" >&2
	exit 1
}

wait_sink() {
	wait "$sink_pid" || echo "(sink: exit status $?)"
	sink_pid=
	cat "$work/sink.json"
}

case $what in relay | all)
	# End to end: ferry-bench -> ferryd -> ferry-bench sink, 1 KiB
	# messages, 100 inbound sessions. The sink's rate (first connection
	# to last message) is the relay's: accepted durably and delivered.
	n=100000
	start_sink "$n"
	start_ferryd bench/conf/bench.conf \
		"\n[domain sink.example]\ntransport = [127.0.0.1]:$sink_port\n"
	bench -c 100 -n "$n" -s 1024 --to rcpt@sink.example
	mv "$work/figures.json" "$work/fill.json" 2>/dev/null || echo '{}' >"$work/fill.json"
	wait_sink
	python3 - "$work/fill.json" "$work/sink.json" >"$work/figures.json" <<'PY'
import json, sys
load, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(json.dumps({"accepted_msgs_per_sec": load.get("msgs_per_sec", ""),
                  "delivered_msgs_per_sec": round(r["msgs_per_sec"], 1),
                  "p50_ms": load.get("p50_ms", ""), "p99_ms": load.get("p99_ms", ""),
                  "max_ms": load.get("max_ms", ""), "sessions": load.get("sessions", ""),
                  "accepted": load.get("accepted", ""), "delivered": r["messages"],
                  "connections": r["connections"]}))
PY
	record relay "1 KiB, 100 sessions"
	stop_ferryd
	ferryd_log_summary
	;;
esac
case $what in drain | all)
	# 100,000 held messages for one domain, then ferryctl flush: timed
	# from the flush to the sink's first and last message.
	n=100000
	start_ferryd bench/conf/bench.conf \
		"\n[domain drain.example]\ntransport = [127.0.0.1]:$sink_port\nhold = yes\n"
	bench -c 100 -n "$n" -s 1024 --to rcpt@drain.example
	mv "$work/figures.json" "$work/fill.json" 2>/dev/null || echo '{}' >"$work/fill.json"
	start_sink "$n"
	t_flush=$(date +%s%N)
	"$build/ferryctl" -c "$work/ferry.conf" flush drain.example
	wait_sink
	python3 - "$work/sink.json" "$t_flush" "$work/fill.json" "$work/figures.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
flush_ms = int(sys.argv[2]) / 1e6
first, last = r["first_message_unix_ms"] - flush_ms, r["last_message_unix_ms"] - flush_ms
print(f"drain: {r['messages']} messages, first {first:.1f} ms after the flush, "
      f"last {last:.0f} ms after it: {r['messages'] / (last / 1000):.0f} messages/s")
fill = json.load(open(sys.argv[3]))
json.dump({"first_ms": round(first, 1), "last_ms": round(last), "msgs_per_sec": round(r["messages"] / (last / 1000)),
           "messages": r["messages"], "connections": r["connections"],
           "fill_msgs_per_sec": fill.get("msgs_per_sec", ""), "fill_p99_ms": fill.get("p99_ms", "")},
          open(sys.argv[4], "w"))
PY
	record drain "ferryctl flush"
	stop_ferryd
	ferryd_log_summary
	;;
esac
case $what in etrn | all)
	# drain's 100,000 held messages, released by a client's ETRN over
	# SMTP instead of ferryctl: timed from the 253 reply (read by the
	# client) to the sink's first and last message.
	n=100000
	start_ferryd bench/conf/bench.conf \
		"\n[domain etrn.example]\ntransport = [127.0.0.1]:$sink_port\nhold = yes\netrn_networks = 127.0.0.1/32\n"
	bench -c 100 -n "$n" -s 1024 --to rcpt@etrn.example
	mv "$work/figures.json" "$work/fill.json" 2>/dev/null || echo '{}' >"$work/fill.json"
	start_sink "$n"
	python3 - "$port" etrn.example "$n" "$work/etrn.json" <<'PY' || {
import json, re, smtplib, sys, time
port, node, n, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
    smtp.ehlo("bench.ferry.example")
    t_sent = time.time_ns()
    smtp.putcmd("ETRN", node)
    code, text = smtp.getreply()
    t_reply = time.time_ns()
reply = f"{code} {text.decode(errors='replace')}"
json.dump({"reply": reply, "sent_unix_ns": t_sent, "reply_unix_ns": t_reply}, open(out, "w"))
print(f"ETRN {node}: {reply} ({(t_reply - t_sent) / 1e6:.1f} ms from sending ETRN to reading the reply)")
if code != 253 or not re.search(rf"\b{n} pending messages\b", reply):
    print(f"etrn: expected 253 with {n} pending messages", file=sys.stderr)
    sys.exit(1)
PY
		echo "etrn: the ETRN failed; ferryd's log:" >&2
		tail -n 20 "$work/ferryd.log" >&2
		exit 1
	}
	wait_sink
	python3 - "$work/sink.json" "$work/etrn.json" "$n" "$work/fill.json" "$work/figures.json" <<'PY'
import json, sys
r, e, n = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
sent_ms, reply_ms = e["sent_unix_ns"] / 1e6, e["reply_unix_ns"] / 1e6
first, last = r["first_message_unix_ms"] - reply_ms, r["last_message_unix_ms"] - reply_ms
print(f"etrn: reply {reply_ms - sent_ms:.1f} ms after ETRN was sent; {r['messages']} messages, "
      f"first {first:.1f} ms after the reply, last {last:.0f} ms after it: "
      f"{r['messages'] / (last / 1000):.0f} messages/s "
      f"({r['messages'] / ((r['last_message_unix_ms'] - sent_ms) / 1000):.0f} from the ETRN sent)")
if r["messages"] != n:
    print(f"etrn: the sink had {r['messages']} messages, not {n}")
fill = json.load(open(sys.argv[4]))
json.dump({"reply_ms": round(reply_ms - sent_ms, 1), "first_ms": round(first, 1), "last_ms": round(last),
           "msgs_per_sec": round(r["messages"] / (last / 1000)),
           "first_ms_from_sent": round(r["first_message_unix_ms"] - sent_ms, 1),
           "msgs_per_sec_from_sent": round(r["messages"] / ((r["last_message_unix_ms"] - sent_ms) / 1000)),
           "messages": r["messages"], "connections": r["connections"],
           "fill_msgs_per_sec": fill.get("msgs_per_sec", ""), "fill_p99_ms": fill.get("p99_ms", "")},
          open(sys.argv[5], "w"))
PY
	record etrn "ETRN over SMTP"
	stop_ferryd
	ferryd_log_summary
	;;
esac
case $what in reload)
	# An ISP's file: 20,000 [domain] sections, each with a quota (so each
	# worker counts its queue again at a switch), and 100,000 messages
	# queued (held). The file's sections' concurrency flips at each reload.
	n=100000 sections=20000
	reload_conf() { # reload_conf CONCURRENCY LEVEL > FILE
		sed "s/^level = warn/level = $2/" bench/conf/bench.conf
		python3 - "$sections" "$1" <<'PY'
import sys
n, c = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(f"[domain c{i:05d}.example]\nhold = yes\nmax_messages = 1000000\nconcurrency = {c}")
PY
	}
	# Filled at warn (info would log every message), then a first reload
	# to info, so that the workers' switches are logged.
	reload_conf 10 warn >"$work/reload-start.conf"
	reload_conf 10 info >"$work/reload-a.conf"
	reload_conf 11 info >"$work/reload-b.conf"
	start_ferryd "$work/reload-start.conf"
	bench -c 100 -n "$n" -s 1024 --to rcpt@c00001.example >/dev/null
	rm -f "$work/figures.json"
	# reload_now A|B: the file switched to A's or B's, then ferryctl
	# reload, its wall time printed in ms.
	reload_now() {
		{
			printf '[server]\nlisten = 127.0.0.1:%s\n\n[spool]\ndirectory = %s\n\n' "$port" "$work/spool"
			cat "$work/reload-$1.conf"
		} >"$work/ferry.conf"
		local t0 t1
		t0=$(date +%s%N)
		# A refusal is counted from the log at the end, not fatal here.
		"$build/ferryctl" -c "$work/ferry.conf" reload >/dev/null || true
		t1=$(date +%s%N)
		echo $(((t1 - t0) / 1000))
	}
	# Idle: five reloads, each worker's switch from its log line.
	reload_now a >/dev/null
	walls=()
	for i in 1 2 3 4 5; do
		walls+=("$(reload_now $([[ $((i % 2)) == 1 ]] && echo b || echo a))")
	done
	python3 - "$work/ferryd.log" "${walls[*]}" "$work/idle.json" <<'PY'
import json, re, sys
log, walls, out = sys.argv[1], [int(w) for w in sys.argv[2].split()], sys.argv[3]
switch = [int(m) for m in re.findall(r"event=worker_reconfigured worker=\d+ elapsed_us=(\d+)", open(log).read())]
print(f"reload, idle: ferryctl reload {min(walls) / 1000:.0f}-{max(walls) / 1000:.0f} ms "
      f"(parse, build, every worker switched); a worker's switch "
      f"{min(switch) / 1000:.1f}-{max(switch) / 1000:.1f} ms ({len(switch)} switches)")
json.dump({"reload_ms_min": round(min(walls) / 1000), "reload_ms_max": round(max(walls) / 1000),
           "switch_ms_min": round(min(switch) / 1000, 1), "switch_ms_max": round(max(switch) / 1000, 1)},
          open(out, "w"))
PY
	# Under a paced load (2,000 messages/s for 10 s), without and then
	# with a reload every second (the log back at warn).
	reload_conf 10 warn >"$work/reload-a.conf"
	reload_conf 11 warn >"$work/reload-b.conf"
	reload_now a >/dev/null
	bench -c 50 -n 20000 -s 1024 --rate 2000 --to rcpt@relay.example
	mv "$work/figures.json" "$work/quiet.json"
	(
		for i in $(seq 9); do
			sleep 1
			reload_now $([[ $((i % 2)) == 1 ]] && echo b || echo a) >/dev/null
		done
	) &
	reloader=$!
	bench -c 50 -n 20000 -s 1024 --rate 2000 --to rcpt@relay.example
	wait "$reloader"
	python3 - "$work/idle.json" "$work/quiet.json" "$work/figures.json" "$work/ferryd.log" <<'PY'
import json, sys
idle, quiet, busy = (json.load(open(p)) for p in sys.argv[1:4])
reloads = open(sys.argv[4]).read().count("event=reload_refused")
for name, f in (("without reloads", quiet), ("a reload a second", busy)):
    print(f"  {name}: {f.get('accepted')} accepted, p50 {f.get('p50_ms')} ms, "
          f"p99 {f.get('p99_ms')} ms, max {f.get('max_ms')} ms")
if reloads:
    print(f"reload: {reloads} reloads were refused (see the log)")
json.dump(dict(idle, **{"quiet_p99_ms": quiet.get("p99_ms"), "quiet_max_ms": quiet.get("max_ms"),
                        "reloading_p99_ms": busy.get("p99_ms"), "reloading_max_ms": busy.get("max_ms"),
                        "reloading_accepted": busy.get("accepted"), "refused": reloads}),
          open(sys.argv[3], "w"))
PY
	record reload "20,000 sections, 100,000 queued"
	stop_ferryd
	ferryd_log_summary
	;;
esac
case $what in attack)
	# The same legitimate load unloaded, then beside 10,000 attackers from
	# 100 addresses (100 each, within the default 200 per client), a fresh
	# ferryd for each kind. ferry-bench stops the attack if ferryd's RSS
	# passes 4 GB or the machine's TCP memory its pressure threshold; the
	# outer timeout (SIGINT: ferry-bench still reports) bounds the rest.
	# First a control: the same two runs beside one idle attacker. Its
	# ratio is what the machine's noise, and a second run into a spool
	# 20,000 messages fuller, give without any attack.
	for kind in control idle slowloris trickle unread flood; do
		start_ferryd bench/conf/attack.conf
		attackers=(--kind "$kind" -a 10000 --sources 100)
		[[ $kind == control ]] && attackers=(--kind idle -a 1 --sources 1)
		args=(attack "${attackers[@]}" -c 50 -n 20000 -s 1024
			--timeout 60 --pid "$pid" "127.0.0.1:$port")
		echo "\$ ferry-bench ${args[*]}"
		timeout -s INT 420 "$build/ferry-bench" "${args[@]}" ||
			echo "(ferry-bench attack: exit status $?)"
		stop_ferryd
		ferryd_log_summary
	done
	;;
esac

# The figures of this run, and the charts drawn from every run's.
if ((${#recorded[@]} > 0)); then
	echo "figures appended to ${recorded[*]}"
	if command -v gnuplot >/dev/null; then
		bench/charts.sh
	else
		echo "(no gnuplot: bench/charts.sh not run; tools/install-deps installs gnuplot-nox)"
	fi
fi
