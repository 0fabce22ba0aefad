#!/usr/bin/env bash
# The demo mesh, on this machine, with the built binaries: three field devices run the meshsync
# daemon on loopback, find each other by LAN beacons (broadcast on 127.255.255.255), record
# households and individuals offline, and converge; two of them edit one household while apart,
# every device flags the same conflict, one person resolves it, and all converge again.
set -euo pipefail
BUILD=${1:-build}
MS="$(cd "$BUILD" && pwd)/meshsync"
WORK=$(mktemp -d /tmp/meshsync-demo-XXXXXX)
PIDS=()
stop_daemons() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_daemons; rm -rf "$WORK"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
NODES=(field1 field2 field3)
# Ports away from the defaults, so the demo does not disturb a real daemon on this machine.
BASE_PORT=${MESHSYNC_DEMO_PORT:-47310}
DISCOVERY_PORT=$((BASE_PORT + 50))

field() { "$MS" "$@"; }
digest() { "$MS" status --data "$WORK/$1" --json | tr -d '\n ' | sed 's/.*"digest":"\([0-9a-f]*\)".*/\1/'; }
summary() {
  "$MS" status --data "$WORK/$1" --json | tr -d '\n ' |
    sed 's/.*"ops":\([0-9]*\).*"conflicts":\([0-9]*\).*"digest":"\([0-9a-f]*\)".*/\1 ops  \2 conflicts  digest \3/'
}
start_daemons() {
  local i=0
  for n in "${NODES[@]}"; do
    "$MS" run --data "$WORK/$n" --listen "tcp://127.0.0.1:$((BASE_PORT + i))" \
      --broadcast 127.255.255.255 --discovery-port "$DISCOVERY_PORT" --beacon-interval 1 \
      --log-level warn 2>>"$WORK/$n.log" &
    PIDS+=($!)
    i=$((i + 1))
  done
}
wait_converged() {
  for _ in $(seq 1 60); do
    local d1 d2 d3
    d1=$(digest field1); d2=$(digest field2); d3=$(digest field3)
    if [ "$d1" = "$d2" ] && [ "$d2" = "$d3" ]; then return 0; fi
    sleep 0.5
  done
  echo "demo: the nodes did not converge within 30 s; logs in $WORK/*.log" >&2
  return 1
}

say "Three field devices, each its own node, on one team roster"
for n in "${NODES[@]}"; do
  "$MS" init --data "$WORK/$n" --scope MZ/NAMPULA/ERATI >/dev/null
  "$MS" identity --data "$WORK/$n" --no-qr 2>/dev/null >>"$WORK/roster" ||
    "$MS" identity --data "$WORK/$n" >>"$WORK/roster"
done
for n in "${NODES[@]}"; do cp "$WORK/roster" "$WORK/$n/roster"; done
cat "$WORK/roster"

say "Their daemons start on loopback and find each other by beacons"
start_daemons
sleep 2
run "$MS" peers --data "$WORK/field1"

say "Each device registers households and their members"
for n in "${NODES[@]}"; do
  for i in 1 2 3; do
    hh=$(echo "{\"tenantId\":\"mz\",\"memberCount\":2,\"address\":{\"locality\":{\"code\":\"ERATI_$n\"}}}" |
         "$MS" put household --data "$WORK/$n" --json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
    ind=$(echo "{\"tenantId\":\"mz\",\"name\":{\"givenName\":\"Person $i of $n\"}}" |
          "$MS" put individual --data "$WORK/$n" --json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
    echo "{\"tenantId\":\"mz\",\"householdClientReferenceId\":\"$hh\",\"individualClientReferenceId\":\"$ind\",\"isHeadOfHousehold\":true}" |
      "$MS" put household_member --data "$WORK/$n" >/dev/null
  done
  printf '%-7s wrote 9 ops\n' "$n"
done

say "The daemons pass the new ops on; every node converges"
wait_converged
for n in "${NODES[@]}"; do printf '%-7s %s\n' "$n" "$(summary "$n")"; done

say "field1 and field2 go out of range and both edit the same household"
stop_daemons
HH=$("$MS" list household --data "$WORK/field1" --json | grep -o '"clientReferenceId": *"[^"]*"' | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
echo '{"tenantId":"mz","memberCount":3}' | run "$MS" put household "$HH" --data "$WORK/field1"
echo '{"tenantId":"mz","memberCount":5}' | run "$MS" put household "$HH" --data "$WORK/field2"

say "Back in range: every device flags the same conflict"
start_daemons
wait_converged
run "$MS" conflicts --data "$WORK/field3"

say "A person resolves it once, on field3; the resolution travels like any op"
echo '{"tenantId":"mz","memberCount":4}' | run "$MS" resolve "$HH" --data "$WORK/field3"
wait_converged
run "$MS" get "$HH" --data "$WORK/field1"
run "$MS" history "$HH" --data "$WORK/field2"

say "Every node holds the same ops and shows the same state"
for n in "${NODES[@]}"; do printf '%-7s %s\n' "$n" "$(summary "$n")"; done
stop_daemons
