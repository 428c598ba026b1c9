#!/usr/bin/env bash
# bench/run.sh [hit|disk|pass|render|first|growth|cluster|all]
#
# Runs PRISM against baselines on loopback and prints ratios measured in the
# same run (baseline and PRISM interleaved). See bench/README.md.
#
# Environment:
#   BENCH_DUR    seconds per wrk cell (default 4)
#   BENCH_ROUNDS interleaved rounds per comparison (default 2; best of each side)
#   BENCH_DATA   where populated cache dirs live (default /dev/shm/prism-bench)
#   BENCH_KEEP   1: keep BENCH_DATA (the 1M set takes minutes to write) and the
#                work dir (configs, PRISM's logs) afterwards
#   BENCH_GROWTH sizes for the growth test (default "1000 100000 1000000")
#   BENCH_LOG    PRISM's log level (default info, PRISM's default)
#   CHROME       Chromium binary (default /usr/lib/chromium/chromium)
#   BENCH_GLOB_N pages indexed in Redis for the cluster glob purge (default 1000000)
#   BENCH_PAGES  pages for the render part (default "flag spa docsify"; see jsorigin)
#   BENCH_RENDER_TABS tab counts for the render part (default "1 2 4"; PRISM's default is added)
#   BENCH_DEFAULT_TABS PRISM's default render.tabs (default 4, config.Default's)
#   BENCH_FIRST_STARTS PRISM starts for the first-render part (default 3)
#   BENCH_FIRST_WARM   renders after the first, per start (default 3 x the default
#                      tabs; the warm median skips the first BENCH_DEFAULT_TABS of them)
#   BENCH_FIRST_PAUSE  seconds to wait after /health before the first render (default 0)
#   PRISM_BIN    a prebuilt prism binary to measure instead of building this checkout's
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DUR=${BENCH_DUR:-4}
ROUNDS=${BENCH_ROUNDS:-2}
DATA=${BENCH_DATA:-/dev/shm/prism-bench}
CHROME=${CHROME:-/usr/lib/chromium/chromium}
GROWTH=${BENCH_GROWTH:-"1000 100000 1000000"}
# PRISM's default render.tabs (config.Default); the render targets judge PRISM there.
DEFAULT_TABS=${BENCH_DEFAULT_TABS:-4}
BOT="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PERSON="Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
HOST=site.test
TOKEN=bench-token

WORK=$(mktemp -d /tmp/prism-bench.XXXXXX)
BIN=$WORK/bin
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  [[ "${BENCH_KEEP:-0}" == 1 ]] || rm -rf "$WORK"
  if [[ "${BENCH_KEEP:-0}" != 1 && "${BENCH_DATA_CREATED:-0}" == 1 ]]; then
    rm -rf "$DATA"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

build() {
  mkdir -p "$BIN"
  if [[ -n ${PRISM_BIN:-} ]]; then
    [[ -x $PRISM_BIN ]] || { log "PRISM_BIN=$PRISM_BIN is not an executable"; exit 1; }
    log "using prism $PRISM_BIN ($("$PRISM_BIN" version 2>/dev/null | head -1)); building bench programs into $BIN"
    ln -s "$(readlink -f "$PRISM_BIN")" "$BIN/prism"
  else
    log "building prism ($(git -C "$ROOT" describe --always --dirty 2>/dev/null)) and bench programs into $BIN"
    (cd "$ROOT" && go build -o "$BIN/prism" .)
  fi
  (cd "$ROOT" && go build -o "$BIN/" ./bench/cmd/...)
}

# start NAME CMD...: runs CMD in the background (output in $WORK/NAME.log),
# remembers its pid in LAST_PID.
start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# stop PID: SIGTERM and wait.
stop() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p != "$1" ]] && keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# listening NAME: waits for the "listening http://ADDR" line a helper prints
# and echoes the URL.
listening() {
  local i
  for i in $(seq 1 200); do
    if grep -q '^listening ' "$WORK/$1.log" 2>/dev/null; then
      awk '/^listening /{print $2; exit}' "$WORK/$1.log"
      return
    fi
    sleep 0.05
  done
  log "$1 did not start:"; cat "$WORK/$1.log" >&2; exit 1
}

# prism_conf NAME ORIGIN CACHEDIR MEMORY_MB TABS: writes $WORK/NAME.toml with
# fresh ports and sets P_PUBLIC and P_ADMIN.
prism_conf() {
  local name=$1 origin=$2 dir=$3 mem=$4 tabs=$5
  local ports
  mapfile -t ports < <("$BIN/freeport" -n 2)
  P_PUBLIC="http://${ports[0]}"
  P_ADMIN="http://${ports[1]}"
  cat >"$WORK/$name.toml" <<CONF
[server]
listen = "${ports[0]}"
[admin]
address = "${ports[1]}"
bearer_token = "$TOKEN"
[render]
chrome_path = "$CHROME"
tabs = $tabs
timeout = "15s"
[cache]
dir = "$dir"
memory_mb = $mem
[recache]
journal_dir = "$WORK/$name-journal"
[log]
level = "${BENCH_LOG:-info}"
[[hosts]]
id = 1
name = "$HOST"
origin = "$origin"
  [[hosts.dimensions]]
  id = 1
  name = "desktop"
  match_ua = ["Googlebot", "bingbot"]
  width = 1366
  height = 768
CONF
}

# start_prism NAME: starts prism on $WORK/NAME.toml and waits for /health.
start_prism() {
  local name=$1 i
  start "$name" "$BIN/prism" -config "$WORK/$name.toml"
  PRISM_PID=$LAST_PID
  for i in $(seq 1 300); do
    if curl -fs -o /dev/null "$P_ADMIN/health"; then return; fi
    if ! kill -0 "$PRISM_PID" 2>/dev/null; then break; fi
    sleep 0.05
  done
  log "prism $name did not start:"; tail -20 "$WORK/$name.log" >&2; exit 1
}

# metric ADMIN NAME: prints a metric's value from /metrics.
metric() {
  curl -fs -H "Authorization: Bearer $TOKEN" "$1/metrics" | awk -v m="$2" '$1 == m && !found {print $2; found = 1}'
}

rss_mb() { awk '/^VmRSS:/{printf "%d", $2/1024}' "/proc/$1/status"; }

# wrk_rps URL [wrk args...]: runs wrk for $DUR s and prints requests/s.
wrk_rps() {
  local url=$1
  shift
  wrk_args "$@"
  wrk -t2 -c32 -d"${DUR}s" "${W_OPTS[@]}" "$url" "${W_SCRIPT[@]}" | awk '/^Requests\/sec:/{print $2}'
}

# wrk_args ARGS...: splits ARGS at "--" into W_OPTS (wrk options) and
# W_SCRIPT ("--" and the Lua script's arguments, which go after the URL).
wrk_args() {
  W_OPTS=() W_SCRIPT=()
  while (($#)); do
    if [[ $1 == -- ]]; then W_SCRIPT=("$@"); return; fi
    W_OPTS+=("$1")
    shift
  done
}

# wrk_lat URL [wrk args...]: prints "rps p50 p99" (latencies in ms) at 8 connections.
wrk_lat() {
  local url=$1
  shift
  wrk_args "$@"
  wrk -t2 -c8 -d"${DUR}s" --latency "${W_OPTS[@]}" "$url" "${W_SCRIPT[@]}" | awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /^ +50%/{p50=ms($2)} /^ +99%/{p99=ms($2)} /^Requests\/sec:/{rps=$2}
    END{printf "%s %.3f %.3f\n", rps, p50, p99}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }
best() { printf '%s\n' "$@" | sort -g | tail -1; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{ if (NR % 2) print v[(NR+1)/2]; else printf "%.4g\n", (v[NR/2]+v[NR/2+1])/2 }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN{ print (r != "n/a" && r >= t) ? "MET" : "NOT MET" }'; }
# verdict_le RATIO TARGET: MET when RATIO <= TARGET (latency ratios).
verdict_le() { awk -v r="$1" -v t="$2" 'BEGIN{ print (r != "n/a" && r <= t) ? "MET" : "NOT MET" }'; }
# field KEY LINE: the value of KEY=VALUE in a tool's output line.
field() { sed -nE "s/(^|.* )$1=([^ ]*).*/\2/p" <<<"$2"; }

# compare LABEL TARGET "BASE_CMD" "PRISM_CMD": runs both ROUNDS times,
# interleaved, and prints the best of each and the ratio.
compare() {
  local label=$1 target=$2 base_cmd=$3 prism_cmd=$4 r b p
  local bs=() ps=()
  for r in $(seq 1 "$ROUNDS"); do
    b=$(eval "$base_cmd"); bs+=("$b")
    p=$(eval "$prism_cmd"); ps+=("$p")
  done
  b=$(best "${bs[@]}"); p=$(best "${ps[@]}")
  printf '%-34s baseline %9s req/s  prism %9s req/s  ratio %s  (target >= %s: %s; rounds b=%s p=%s)\n' \
    "$label" "$b" "$p" "$(ratio "$p" "$b")" "$target" "$(verdict "$(ratio "$p" "$b")" "$target")" \
    "$(IFS=,; echo "${bs[*]}")" "$(IFS=,; echo "${ps[*]}")"
}

start_origin() {
  [[ -n ${ORIGIN:-} ]] && return
  start origin "$BIN/jsorigin"
  ORIGIN=$(listening origin)
}

# page_origin PAGE: starts (once) jsorigin -page PAGE and sets PAGE_ORIGIN,
# and the page's completion marker: MARKER (the string a complete render
# holds) and ROD_WAIT (rodloop's wait: window.prerenderReady, or the
# marker element in the DOM).
declare -A ORIGINS=()
page_origin() {
  local page=$1
  case $page in
  flag) MARKER='data-items="200"' ROD_WAIT=() ;;
  spa) MARKER='data-items="76"' ROD_WAIT=(-wait-selector '#bench-complete') ;;
  docsify) MARKER='id="bench-done"' ROD_WAIT=(-wait-selector '#bench-done') ;;
  *) log "unknown page $page (want flag, spa or docsify)"; exit 2 ;;
  esac
  if [[ -z ${ORIGINS[$page]:-} ]]; then
    start "origin-$page" "$BIN/jsorigin" -page "$page"
    ORIGINS[$page]=$(listening "origin-$page")
  fi
  PAGE_ORIGIN=${ORIGINS[$page]}
}

# render_tabs: the tab counts of the render part, PRISM's default included.
render_tabs() { printf '%s\n' ${BENCH_RENDER_TABS-1 2 4} "$DEFAULT_TABS" | sort -n -u | tr '\n' ' '; }

# ---------------------------------------------------------------------------

bench_hit() {
  log "== 1. memory-tier hit vs minimal Go server, same bytes"
  start_origin
  prism_conf hit "$ORIGIN" "$WORK/hit-cache" 256 2
  start_prism hit
  local url="$P_PUBLIC/p/hit" st
  st=$(curl -s -o /dev/null -w '%{http_code}' -A "$BOT" -H "Host: $HOST" "$url")
  [[ $st == 200 ]] || { log "render of $url gave $st"; exit 1; }
  curl -s -A "$BOT" -H "Host: $HOST" -o "$WORK/plain.html" "$url"
  curl -s -A "$BOT" -H "Host: $HOST" -H 'Accept-Encoding: gzip' -o "$WORK/page.gz" "$url"
  curl -s -D - -o /dev/null -A "$BOT" -H "Host: $HOST" "$url" | grep -qi '^X-Prism-Cache: HIT' ||
    { log "no HIT for $url"; exit 1; }
  start baseline "$BIN/baseline" -plain "$WORK/plain.html" -gzip "$WORK/page.gz"
  local base
  base=$(listening baseline)
  log "page: $(wc -c <"$WORK/plain.html") bytes plain, $(wc -c <"$WORK/page.gz") bytes gzip"
  local H=(-H "Host: $HOST" -H "User-Agent: $BOT")
  compare "hit plain (identity)" 0.9 \
    "wrk_rps $base/p/hit ${H[*]@Q}" "wrk_rps $url ${H[*]@Q}"
  compare "hit gzip" 0.9 \
    "wrk_rps $base/p/hit ${H[*]@Q} -H 'Accept-Encoding: gzip'" "wrk_rps $url ${H[*]@Q} -H 'Accept-Encoding: gzip'"
  log "prism: $(metric "$P_ADMIN" 'prism_requests_total{status="hit"}') hits, RSS $(rss_mb "$PRISM_PID") MB"
  stop "$PRISM_PID"
}

bench_pass() {
  log "== 3. person pass-through vs bare httputil.ReverseProxy"
  start_origin
  prism_conf pass "$ORIGIN" "$WORK/pass-cache" 64 1
  start_prism pass
  start bareproxy "$BIN/bareproxy" -origin "$ORIGIN"
  local bare
  bare=$(listening bareproxy)
  local H=(-H "Host: $HOST" -H "User-Agent: $PERSON" -H "Accept: text/html")
  curl -fs -o /dev/null "${H[@]}" "$P_PUBLIC/p/person" || { log "pass-through failed"; exit 1; }
  compare "pass-through (51 KB page)" 0.9 \
    "wrk_rps $bare/p/person ${H[*]@Q}" "wrk_rps $P_PUBLIC/p/person ${H[*]@Q}"
  stop "$PRISM_PID"
}

# dataset NAME N SIZE: populates $DATA/NAME with N entries (once; reused while
# BENCH_DATA is kept).
dataset() {
  local name=$1 n=$2 size=$3
  if [[ ! -d $DATA ]]; then
    mkdir -p "$DATA"
    BENCH_DATA_CREATED=1
  fi
  if [[ -f $DATA/$name/.complete ]]; then
    log "dataset $name: reusing $DATA/$name"
    return
  fi
  rm -rf "${DATA:?}/$name"
  log "dataset $name: writing $n entries with cachestore.Store.Put ..."
  "$BIN/populate" -dir "$DATA/$name" -n "$n" -size "$size" -workers 16 >&2
  touch "$DATA/$name/.complete"
}

bench_disk() {
  log "== 2. disk-tier hit (memory tier cold) vs memory-tier hit"
  local n=20000
  dataset disk20k "$n" 50000
  start_origin
  prism_conf diskmem "$ORIGIN" "$DATA/disk20k" 256 1
  local mem_public=$P_PUBLIC mem_admin=$P_ADMIN
  start_prism diskmem
  local mem_pid=$PRISM_PID
  prism_conf diskcold "$ORIGIN" "$DATA/disk20k" 1 1
  local cold_public=$P_PUBLIC cold_admin=$P_ADMIN
  start_prism diskcold
  local cold_pid=$PRISM_PID
  local H=(-H "Host: $HOST" -H "User-Agent: $BOT" -H "Accept-Encoding: gzip")
  local lua=$HERE/lua/keys.lua
  # Warm the memory instance's 500 hot keys.
  wrk -t1 -c4 -d1s "${H[@]}" -s "$lua" "$mem_public" -- 500 >/dev/null
  wrk -t1 -c4 -d1s "${H[@]}" -s "$lua" "$mem_public" -- 500 >/dev/null
  log "entry: $(curl -s "${H[@]}" "$mem_public/c00/item-0000000" | wc -c) bytes gzip"
  compare "disk-tier hit (20k keys, 1 MB mem)" 0.5 \
    "wrk_rps $mem_public ${H[*]@Q} -s $lua -- 500" "wrk_rps $cold_public ${H[*]@Q} -s $lua -- $n"
  log "(baseline column = memory-tier hits over 500 hot keys on the same data set)"
  local mh dh
  mh=$(metric "$cold_admin" 'prism_cache_hits_total{tier="memory"}')
  dh=$(metric "$cold_admin" 'prism_cache_hits_total{tier="disk"}')
  log "cold instance: disk hits $dh, memory hits $mh ($(ratio "$dh" "$((${dh%.*} + ${mh%.*}))") from disk)"
  log "memory instance: disk hits $(metric "$mem_admin" 'prism_cache_hits_total{tier="disk"}') (warm-up), RSS $(rss_mb "$mem_pid") MB for memory_mb=256, tier holds $(( $(metric "$mem_admin" prism_cache_memory_bytes | cut -d. -f1) >> 20 )) MB"
  stop "$mem_pid"
  stop "$cold_pid"
}

bench_render() {
  log "== 4. renders/s and latency vs a bare go-rod loop (unique URLs: every request a MISS)"
  local pages=${BENCH_PAGES:-flag spa docsify} page tabs rod prism rr pr r50 p50 r90 p90 cr cp
  local -A RR=() PR=() R50=() P50=() CR=() CP=()
  local tablist
  tablist=$(render_tabs)
  log "pages: $pages; tabs: $tablist(PRISM's default: $DEFAULT_TABS); cells of ${DUR}x2 s per side, plus ${DUR} s of PRISM at one crawler per tab for its latency"
  for page in $pages; do
    page_origin "$page"
    for tabs in $tablist; do
      rod=$("$BIN/rodloop" -url "$PAGE_ORIGIN" -tabs "$tabs" -duration "$((DUR * 2))s" -chrome "$CHROME" \
        -marker "$MARKER" "${ROD_WAIT[@]}" 2>"$WORK/rodloop.err") ||
        { log "rodloop failed"; cat "$WORK/rodloop.err" >&2; exit 1; }
      prism_conf "render-$page-$tabs" "$PAGE_ORIGIN" "$WORK/render-$page-$tabs-cache" 64 "$tabs"
      start_prism "render-$page-$tabs"
      prism=$("$BIN/renderload" -url "$P_PUBLIC" -host "$HOST" -c $((tabs * 2)) -warmup "$tabs" -duration "$((DUR * 2))s" \
        -lat-c "$tabs" -lat-duration "${DUR}s" -marker "$MARKER" -tag "page=$page tabs=$tabs")
      stop "$PRISM_PID"
      log "  $rod"
      log "  $prism"
      rr=$(field rps "$rod") pr=$(field rps "$prism")
      r50=$(field p50_ms "$rod") p50=$(field p50_ms "$prism") r90=$(field p90_ms "$rod") p90=$(field p90_ms "$prism")
      # complete/all: every render tried (rod: failed ones too; PRISM: both
      # phases, responses that were no MISS and failed requests too).
      cr="$(field complete "$rod")/$(($(field renders "$rod") + $(field failed "$rod")))"
      cp="$(($(field complete "$prism") + $(field lat_complete "$prism")))/$(($(field renders "$prism") + $(field other "$prism") + $(field failed "$prism") + $(field lat_renders "$prism") + $(field lat_other "$prism") + $(field lat_failed "$prism")))"
      RR[$page,$tabs]=$rr PR[$page,$tabs]=$pr R50[$page,$tabs]=$r50 P50[$page,$tabs]=$p50 CR[$page,$tabs]=$cr CP[$page,$tabs]=$cp
      printf '%-7s %2d tab(s)  renders/s rod %6s prism %6s ratio %-4s | p50 ms rod %6s prism %6s ratio %-5s | p90 ms rod %6s prism %6s | complete rod %s prism %s\n' \
        "$page" "$tabs" "$rr" "$pr" "$(ratio "$pr" "$rr")" "$r50" "$p50" "$(ratio "$p50" "$r50")" "$r90" "$p90" "$cr" "$cp"
    done
  done

  # all_complete PAGE: every cell of PAGE complete on both sides.
  all_complete() {
    local t c
    for t in $tablist; do
      for c in "${CR[$1,$t]}" "${CP[$1,$t]}"; do
        [[ ${c%/*} == "${c#*/}" && ${c#*/} != 0 ]] || return 1
      done
    done
  }
  # cells_complete PAGE: "1 tab: rod 10/10, prism 12/12; 2 tabs: ...".
  cells_complete() {
    local t sep=""
    for t in $tablist; do
      printf '%s%s tab(s): rod %s, prism %s' "$sep" "$t" "${CR[$1,$t]}" "${CP[$1,$t]}"
      sep="; "
    done
  }
  local peak peak_tabs r v
  for page in $pages; do
    if [[ $page == flag ]]; then
      if [[ -z ${RR[flag,4]:-} ]]; then
        printf 'target (flag page): not measured at 4 tabs\n'
        continue
      fi
      r=$(ratio "${PR[flag,4]}" "${RR[flag,4]}")
      printf 'target (flag page):    renders/s at 4 tabs, PRISM %s vs bare loop %s: ratio %s  (>= 0.85: %s)\n' \
        "${PR[flag,4]}" "${RR[flag,4]}" "$r" "$(verdict "$r" 0.85)"
      v=MET; all_complete flag || v="NOT MET"
      printf 'target (flag page):    every render complete on both sides (%s): %s\n' \
        "$(cells_complete flag)" "$v"
      continue
    fi
    if [[ -n ${R50[$page,1]:-} ]]; then
      r=$(ratio "${P50[$page,1]}" "${R50[$page,1]}")
      printf 'target (%s page): p50 at 1 tab, PRISM %s ms vs bare loop %s ms: ratio %s  (<= 1.5: %s)\n' \
        "$page" "${P50[$page,1]}" "${R50[$page,1]}" "$r" "$(verdict_le "$r" 1.5)"
    else
      printf 'target (%s page): p50 at 1 tab: not measured\n' "$page"
    fi
    peak=0 peak_tabs=0
    for tabs in $tablist; do
      if awk -v a="${RR[$page,$tabs]}" -v b="$peak" 'BEGIN { exit !(a > b) }'; then peak=${RR[$page,$tabs]} peak_tabs=$tabs; fi
    done
    r=$(ratio "${PR[$page,$DEFAULT_TABS]}" "$peak")
    printf 'target (%s page): renders/s, PRISM at its default %d tabs %s vs the bare loop peak %s (at %d tabs): ratio %s  (>= 0.8: %s)\n' \
      "$page" "$DEFAULT_TABS" "${PR[$page,$DEFAULT_TABS]}" "$peak" "$peak_tabs" "$r" "$(verdict "$r" 0.8)"
    v=MET; all_complete "$page" || v="NOT MET"
    printf 'target (%s page): every render complete on both sides (%s): %s\n' \
      "$page" "$(cells_complete "$page")" "$v"
  done
  bench_first
}

# ttfb URL: one crawler request; prints "SECONDS_TO_FIRST_BYTE STATUS CACHE".
ttfb() {
  local out st
  out=$(curl -s -o /dev/null -D "$WORK/ttfb.hdr" -w '%{time_starttransfer} %{http_code}' -A "$BOT" -H "Host: $HOST" "$1")
  st=$(awk 'tolower($1) == "x-prism-cache:" {gsub("\r", "", $2); print $2}' "$WORK/ttfb.hdr")
  echo "$out ${st:--}"
}

bench_first() {
  # Warm renders: the first $DEFAULT_TABS after the first render may each be
  # another tab's first (a tab is busy with its reset when the next request
  # comes), so the warm median is taken over the ones after them.
  local starts=${BENCH_FIRST_STARTS:-3} nwarm=${BENCH_FIRST_WARM:-$((3 * DEFAULT_TABS))}
  log "== 4b. first render after start vs warm renders (spa page, fresh cache, $DEFAULT_TABS tabs, $starts starts)"
  page_origin spa
  local s i out first warm ws ratios=() r bad
  for s in $(seq 1 "$starts"); do
    prism_conf "first$s" "$PAGE_ORIGIN" "$WORK/first$s-cache" 64 "$DEFAULT_TABS"
    start_prism "first$s" # fresh cache dir; returns once /health answers 200
    sleep "${BENCH_FIRST_PAUSE:-0}"
    bad=""
    out=$(ttfb "$P_PUBLIC/p/first-$s-0")
    [[ $out == *" 200 MISS" ]] || bad="first request gave ${out#* }"
    first=${out%% *}
    ws=()
    for i in $(seq 1 "$nwarm"); do
      out=$(ttfb "$P_PUBLIC/p/first-$s-$i")
      [[ $out == *" 200 MISS" ]] || bad="${bad:+$bad; }warm request $i gave ${out#* }"
      ws+=("${out%% *}")
    done
    stop "$PRISM_PID"
    warm=$(median "${ws[@]:$DEFAULT_TABS}")
    r=$(ratio "$first" "$warm")
    ratios+=("$r")
    printf 'first render after start %d:  first %4.0f ms  warm median %4.0f ms (%s ms)  ratio %s%s\n' "$s" \
      "$(awk -v v="$first" 'BEGIN{print v*1000}')" "$(awk -v v="$warm" 'BEGIN{print v*1000}')" \
      "$(printf '%s\n' "${ws[@]}" | awk '{printf "%s%.0f", (NR > 1 ? "," : ""), $1*1000}')" "$r" "${bad:+  ($bad)}"
  done
  r=$(median "${ratios[@]}")
  printf 'target: first render after start vs warm (time to first byte, median over %d starts): ratio %s  (<= 1.2: %s)\n' \
    "$starts" "$r" "$(verdict_le "$r" 1.2)"
}

bench_growth() {
  log "== 5. growth: hit latency, purge, start-up, resident memory"
  start_origin
  local n H lua=$HERE/lua/keys.lua out hot uni
  H=(-H "Host: $HOST" -H "User-Agent: $BOT" -H "Accept-Encoding: gzip")
  for n in $GROWTH; do
    dataset "n$n" "$n" 2000
    prism_conf "g$n" "$ORIGIN" "$DATA/n$n" 64 1
    start_prism "g$n"
    local i
    for i in $(seq 1 2400); do
      [[ $(metric "$P_ADMIN" prism_cache_index_ready) == 1 ]] && break
      sleep 0.05
    done
    wrk -t1 -c4 -d1s "${H[@]}" -s "$lua" "$P_PUBLIC" -- 1000 >/dev/null
    hot=$(wrk_lat "$P_PUBLIC" "${H[@]}" -s "$lua" -- 1000)
    uni=$(wrk_lat "$P_PUBLIC" "${H[@]}" -s "$lua" -- "$n")
    printf 'hit latency, %7d entries          hot 1k keys: %s  uniform over all: %s  (req/s p50_ms p99_ms)  RSS %s MB (memory_mb=64, tier %s MB, index %s entries)\n' \
      "$n" "$hot" "$uni" "$(rss_mb "$PRISM_PID")" \
      "$(( $(metric "$P_ADMIN" prism_cache_memory_bytes | cut -d. -f1) >> 20 ))" "$(metric "$P_ADMIN" prism_cache_entries)"
    echo "$n $hot" >>"$WORK/growth.txt"
    if [[ $n == 1000000 ]]; then
      out=$(curl -s -w ' %{time_total}' -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d '{"pattern": "/c07/*"}' "$P_ADMIN/purge/pattern")
      printf 'glob purge over %d keys              pattern /c07/*: %s s  (%s)\n' "$n" "${out##* }" "${out% *}"
      out=$(curl -s -w ' %{time_total}' -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d '{"pattern": "/nothing/*"}' "$P_ADMIN/purge/pattern")
      printf 'glob purge over %d keys              no match:       %s s  (%s)\n' "$(metric "$P_ADMIN" prism_cache_entries)" "${out##* }" "${out% *}"
      rm -f "$DATA/n$n/.complete" # the purge changed the data set: rewrite it next time
    fi
    stop "$PRISM_PID"
    if [[ $n == 100000 ]]; then
      local r
      for r in 1 2 3; do
        prism_conf "s$r" "$ORIGIN" "$DATA/n$n" 64 4
        out=$("$BIN/startup" -prism "$BIN/prism" -config "$WORK/s$r.toml" -public "$P_PUBLIC" -admin "$P_ADMIN" -token "$TOKEN" -log "$WORK/s$r.log")
        printf 'start-up to serving, %d entries    %s  (target first_hit < 1000 ms: %s)\n' "$n" "$out" \
          "$(awk -v v="$(sed -E 's/.*first_hit_ms=([0-9]+).*/\1/' <<<"$out")" 'BEGIN{print (v < 1000) ? "MET" : "NOT MET"}')"
      done
    fi
  done
  awk 'NR==1{b=$2; bl=$3} {printf "hot-key hits at %7d entries vs the smallest set: req/s ratio %.2f, p50 ratio %.2f\n", $1, $2/b, $3/bl}' "$WORK/growth.txt"
}

bench_cluster() {
  log "== 6. cluster mode: 3 nodes (1 tab each) on one redis-server, and 1 node without [cluster]"
  command -v redis-server >/dev/null || { log "redis-server not found (apt-get install redis-server)"; exit 1; }
  "$BIN/clusterbench" -prism "$BIN/prism" -chrome "$CHROME" -work "$WORK/cluster" -dur "$DUR" -rounds "$ROUNDS" \
    ${BENCH_GLOB_N:+-glob-n "$BENCH_GLOB_N"}
}

main() {
  local what=${1:-all}
  case $what in
  hit | disk | pass | render | first | growth | cluster | all) ;;
  *) echo "usage: $0 [hit|disk|pass|render|first|growth|cluster|all]" >&2; exit 2 ;;
  esac
  command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
  build
  log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  case $what in
  all) bench_hit; bench_pass; bench_disk; bench_render; bench_growth; bench_cluster ;;
  *) "bench_$what" ;;
  esac
}

main "$@"
