#!/usr/bin/env bash
# The demo mesh, on this machine, with the built binary: three field devices record households
# and individuals offline, a supervisor's laptop carries their ops between them (bundles on a
# "USB stick"), two devices edit one household concurrently, and every device ends with the same
# state: equal digests, the same flagged conflict, resolved once for everyone.
set -euo pipefail
BUILD=${1:-build}
MS="$(cd "$BUILD" && pwd)/meshsync"
WORK=$(mktemp -d /tmp/meshsync-demo-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Three field devices and a supervisor laptop, each its own node"
for n in field1 field2 field3 supervisor; do
  "$MS" init --data "$WORK/$n" --scope MZ/NAMPULA/ERATI >/dev/null
  printf '%-10s %s\n' "$n" "$("$MS" identity --data "$WORK/$n")"
done

say "Each device registers households and their members offline"
for n in field1 field2 field3; do
  for i in 1 2 3; do
    hh=$(echo "{\"tenantId\":\"mz\",\"memberCount\":2,\"address\":{\"locality\":{\"code\":\"ERATI_$n\"}}}" |
         "$MS" put household --data "$WORK/$n" --json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
    ind=$(echo "{\"tenantId\":\"mz\",\"name\":{\"givenName\":\"Person $i of $n\"}}" |
          "$MS" put individual --data "$WORK/$n" --json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
    echo "{\"tenantId\":\"mz\",\"householdClientReferenceId\":\"$hh\",\"individualClientReferenceId\":\"$ind\",\"isHeadOfHousehold\":true}" |
      "$MS" put household_member --data "$WORK/$n" >/dev/null
  done
  echo "$n: $("$MS" status --data "$WORK/$n" --json | tr -d '\n ' | sed 's/.*"ops":\([0-9]*\).*"digest":"\([0-9a-f]\{16\}\).*/\1 ops, digest \2.../')"
done

say "The supervisor walks past each device and exchanges bundles"
for round in 1 2; do
  for n in field1 field2 field3; do
    "$MS" export "$WORK/$n.bundle" --data "$WORK/$n" >/dev/null
    "$MS" import "$WORK/$n.bundle" --data "$WORK/supervisor" >/dev/null
    "$MS" export "$WORK/sup.bundle" --data "$WORK/supervisor" >/dev/null
    "$MS" import "$WORK/sup.bundle" --data "$WORK/$n" >/dev/null
  done
done
for n in field1 field2 field3 supervisor; do
  printf '%-10s %s\n' "$n" "$("$MS" status --data "$WORK/$n" --json | tr -d '\n ' | sed 's/.*"ops":\([0-9]*\).*"digest":"\([0-9a-f]*\)".*/\1 ops  digest \2/')"
done

say "Two devices edit the same household before meeting again"
HH=$("$MS" list household --data "$WORK/field1" --json | grep -o '"clientReferenceId": *"[^"]*"' | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
echo '{"tenantId":"mz","memberCount":3}' | run "$MS" put household "$HH" --data "$WORK/field1"
echo '{"tenantId":"mz","memberCount":5}' | run "$MS" put household "$HH" --data "$WORK/field2"
for n in field1 field2; do
  "$MS" export "$WORK/$n.bundle" --data "$WORK/$n" >/dev/null
  "$MS" import "$WORK/$n.bundle" --data "$WORK/supervisor" >/dev/null
done
"$MS" export "$WORK/sup.bundle" --data "$WORK/supervisor" >/dev/null
for n in field1 field2 field3; do "$MS" import "$WORK/sup.bundle" --data "$WORK/$n" >/dev/null; done
run "$MS" conflicts --data "$WORK/field3"

say "The supervisor resolves it once; the resolution travels like any op"
echo '{"tenantId":"mz","memberCount":4}' | run "$MS" resolve "$HH" --data "$WORK/supervisor"
"$MS" export "$WORK/sup.bundle" --data "$WORK/supervisor" >/dev/null
for n in field1 field2 field3; do "$MS" import "$WORK/sup.bundle" --data "$WORK/$n" >/dev/null; done
run "$MS" get "$HH" --data "$WORK/field2"
run "$MS" history "$HH" --data "$WORK/field3"

say "Every node holds the same ops and shows the same state"
for n in field1 field2 field3 supervisor; do
  printf '%-10s %s\n' "$n" "$("$MS" status --data "$WORK/$n" --json | tr -d '\n ' | sed 's/.*"ops":\([0-9]*\).*"conflicts":\([0-9]*\).*"digest":"\([0-9a-f]*\)".*/\1 ops  \2 conflicts  digest \3/')"
done
