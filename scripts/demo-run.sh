#!/usr/bin/env bash
# The demo mesh, on this machine, with the built binaries: three field devices run the meshsync
# daemon on loopback, find each other by LAN beacons (broadcast on 127.255.255.255), record
# households and individuals offline, and converge; two of them edit one household while apart,
# every device flags the same conflict, one person resolves it, and all converge again. Then the
# district office laptop comes online with internet: its daemon joins the mesh and runs the
# gateway, which forwards everything the devices recorded to the campaign service (the reference
# DIGIT HCM service, meshsync-campaign, on loopback), and the service's receipts and downloads
# (SOS contacts, forms) come back to every device.
set -euo pipefail
BUILD=${1:-build}
MS="$(cd "$BUILD" && pwd)/meshsync"
CAMPAIGN="$(cd "$BUILD" && pwd)/sim/meshsync-campaign"
WORK=$(mktemp -d /tmp/meshsync-demo-XXXXXX)
PIDS=()
EXTRA_PIDS=()
stop_daemons() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
stop_extra() {
  for p in "${EXTRA_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${EXTRA_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  EXTRA_PIDS=()
}
trap 'stop_daemons; stop_extra; rm -rf "$WORK"' EXIT
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

say "Three field devices, each its own node, on one team roster (with the district laptop)"
for n in "${NODES[@]}" district; do
  "$MS" init --data "$WORK/$n" --scope MZ/NAMPULA/ERATI >/dev/null
  "$MS" identity --data "$WORK/$n" --no-qr 2>/dev/null >>"$WORK/roster" ||
    "$MS" identity --data "$WORK/$n" >>"$WORK/roster"
done
for n in "${NODES[@]}" district; do cp "$WORK/roster" "$WORK/$n/roster"; done
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

say "field1 registers a household without its member count, and a member of it, still offline"
BAD=$(echo '{"tenantId":"mz","address":{"locality":{"code":"ERATI_field1"}}}' |
      "$MS" put household --data "$WORK/field1" --json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
IND=$(echo '{"tenantId":"mz","name":{"givenName":"Ana"}}' |
      "$MS" put individual --data "$WORK/field1" --json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
echo "{\"tenantId\":\"mz\",\"householdClientReferenceId\":\"$BAD\",\"individualClientReferenceId\":\"$IND\"}" |
  run "$MS" put household_member --data "$WORK/field1"

say "The campaign service (meshsync-campaign, the reference DIGIT HCM service) on loopback"
SVC_PORT=$((BASE_PORT + 40))
"$CAMPAIGN" --data "$WORK/service" --listen "127.0.0.1:$SVC_PORT" --process-delay-ms 200 \
  >"$WORK/service.out" 2>"$WORK/service.log" &
EXTRA_PIDS+=($!)
for _ in $(seq 1 50); do grep -q listening "$WORK/service.out" 2>/dev/null && break; sleep 0.1; done
cat "$WORK/service.out"

say "The district laptop comes online: its daemon joins the mesh and runs the gateway"
printf '{"baseUrl": "http://127.0.0.1:%s", "tenantId": "mz",\n "auth": {"username": "gateway", "password": "eGov@123"},\n "confirm": {"delayMs": 300, "windowMs": 5000}}\n' \
  "$SVC_PORT" >"$WORK/gateway.json"
chmod 600 "$WORK/gateway.json"
cat "$WORK/gateway.json"
"$MS" run --data "$WORK/district" --listen "tcp://127.0.0.1:$((BASE_PORT + 3))" \
  --broadcast 127.255.255.255 --discovery-port "$DISCOVERY_PORT" --beacon-interval 1 \
  --gateway "$WORK/gateway.json" --log-level info 2>>"$WORK/district.log" &
EXTRA_PIDS+=($!)
start_daemons
awaiting() {
  "$MS" status --data "$WORK/$1" --json | tr -d '\n ' | sed -n 's/.*"awaiting":\([0-9]*\).*/\1/p'
}
done_all=0
for _ in $(seq 1 120); do
  done_all=1
  for n in "${NODES[@]}"; do [ "$(awaiting "$n")" = "0" ] || done_all=0; done
  [ $done_all = 1 ] && break
  sleep 0.5
done
if [ $done_all != 1 ]; then
  echo "demo: receipts did not come back within 60 s; logs in $WORK/*.log" >&2
  exit 1
fi
grep 'gateway' "$WORK/district.log" | tail -3

say "What reached the service: every entity once, parents before children"
for t in household individual household_member; do
  printf '%-17s %s on the service\n' "$t" \
    "$(curl -s "http://127.0.0.1:$SVC_PORT/_test/entities?type=$t" | tr -d '\n ' | sed 's/.*"count":\([0-9]*\).*/\1/')"
done
printf 'the household edited concurrently, on the service: '
curl -s "http://127.0.0.1:$SVC_PORT/_test/entities?type=household" | tr -d '\n ' |
  grep -o "\"clientReferenceId\":\"$HH\"[^}]*" | grep -o '"memberCount":[0-9]*\|"rowVersion":[0-9]*' |
  tr '\n' ' ' || true
echo '(its four saves, in merge order: the resolution, the mesh winner, is the last)'

say "The receipts come back to the devices that wrote the ops"
run "$MS" status --data "$WORK/field1"
run "$MS" history "$HH" --data "$WORK/field3"

say "The gateway also brought configuration into the mesh, for devices without internet"
run "$MS" get config --data "$WORK/field2"
run "$MS" get config sos/contacts --data "$WORK/field2"
stop_daemons
stop_extra
