#!/usr/bin/env bash
# Manual end-to-end check of the SRI peers on loopback (see docs/INTEROP.md):
# sri-harness tp -> pool_sv2 -> mining_device, a new block, then translator_sv2 (aggregated)
# -> pool with tools/sv1-miner.py, and a sniffer in front of the pool. Waits on the documented
# ready lines, exits non-zero on the first timeout, kills everything it started.
#
#   integration-tests/sri-harness/tools/smoke.sh [BIN_DIR]    # default: scripts/install-peers
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
C="$here/../configs"
B=${1:-$("$root/scripts/install-peers" | tail -1)}
W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# wait_for FILE PATTERN SECONDS
wait_for() {
  local i=0
  until grep -q -- "$2" "$1" 2>/dev/null; do
    i=$((i + 1)); [ $i -le $(($3 * 5)) ] || { echo "TIMEOUT waiting for '$2' in $1 (logs in $W)" >&2; exit 1; }
    sleep 0.2
  done
  echo "ok: $(basename "$1"): $(grep -m1 -o -- "$2.*" "$1" | cut -c1-120)"
}

# 1. Template Provider; a FIFO keeps its stdin open (closing the writer stops the TP).
mkfifo "$W/tp.in"
sleep 100000 > "$W/tp.in" & pids+=($!)
"$B/sri-harness" tp --listen 127.0.0.1:0 < "$W/tp.in" > "$W/tp.out" 2> "$W/tp.err" & pids+=($!)
wait_for "$W/tp.out" '^LISTENING ' 10
TP=$(awk '/^LISTENING/{print $2}' "$W/tp.out")

# 2. Pool
POOL_PORT=$(free_port)
sed -e "s/{{LISTEN_ADDR}}/127.0.0.1:$POOL_PORT/" -e "s/{{TP_ADDR}}/$TP/" "$C/pool.toml" > "$W/pool.toml"
"$B/pool_sv2" -c "$W/pool.toml" > "$W/pool.log" 2>&1 & pids+=($!)
wait_for "$W/pool.log" 'Required template data received, ready to accept connections' 20

# 3. SRI CPU miner on a standard channel
"$B/mining_device" --address-pool "127.0.0.1:$POOL_PORT" --id-device d --id-user u --cores 1 > "$W/md.log" 2>&1 & md=$!; pids+=($md)
wait_for "$W/md.log" 'MINING DEVICE: channel opened with' 30
wait_for "$W/md.log" 'Received SubmitSharesSuccess' 90

# 4. New block from the TP
echo new-block > "$W/tp.in"
wait_for "$W/md.log" 'Received SetNewPrevHash channel id: 2, job id: 2' 10
kill "$md"

# 5. Sniffer in front of the pool, translator (aggregated) through it, a Sv1 miner
"$B/sri-harness" sniffer --listen 127.0.0.1:0 --upstream "127.0.0.1:$POOL_PORT" --name tproxy-pool --ignore-stdin > "$W/sn.out" 2> "$W/sn.err" & pids+=($!)
wait_for "$W/sn.out" '^LISTENING ' 10
SN_PORT=$(awk '/^LISTENING/{print $2}' "$W/sn.out"); SN_PORT=${SN_PORT##*:}
SV1_PORT=$(free_port)
sed -e "s/{{DOWNSTREAM_HOST}}/127.0.0.1/" -e "s/{{DOWNSTREAM_PORT}}/$SV1_PORT/" \
    -e "s/{{UPSTREAM_HOST}}/127.0.0.1/" -e "s/{{UPSTREAM_PORT}}/$SN_PORT/" -e "s/{{MIN_HASHRATE}}/10_000.0/" \
    -e "s/min_individual_miner_hashrate = 1_000_000.0/min_individual_miner_hashrate = 10_000.0/" \
    "$C/translator-aggregated.toml" > "$W/tproxy.toml"
"$B/translator_sv2" -c "$W/tproxy.toml" > "$W/tproxy.log" 2>&1 & pids+=($!)
wait_for "$W/tproxy.log" 'Translator Proxy: listening on' 20
timeout 150 python3 "$here/sv1-miner.py" 127.0.0.1 "$SV1_PORT" 2 > "$W/sv1.log" 2>&1
wait_for "$W/tproxy.log" 'Received: SubmitSharesSuccess' 10
wait_for "$W/pool.log" 'SubmitSharesExtended: SubmitSharesSuccess' 10
wait_for "$W/sn.err" 'Forwarded: SubmitSharesSuccess | Direction: ⬇' 10
echo "all good (logs in $W)"
