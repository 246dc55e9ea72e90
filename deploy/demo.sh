#!/usr/bin/env bash
# Brings the whole system up on one machine: the control plane on embedded
# SQLite and a hub with 16 simulated slots, enrolled with it and syncing over
# QUIC with mutual TLS. Prints the API URLs and the first administrator's
# credentials. Ctrl-C stops both.
#
# State lives in .demo/ (delete it to start afresh). The first admin's password
# is shown by the control plane only once, so the launcher keeps it in
# .demo/admin-credentials (mode 0600) for later runs. The hub is enrolled on
# the first run (`control-plane hub enroll`, then `hubd enroll`).
set -euo pipefail
cd "$(dirname "$0")/.."
cp_http=${CP_HTTP:-127.0.0.1:8780}
cp_sync=${CP_SYNC:-127.0.0.1:8781}
hub_api=${HUB_API:-127.0.0.1:8790}
slots=${SLOTS:-16}
state=.demo
mkdir -p "$state"

# hubd links the system libopus (call recordings): on a fresh Debian machine,
# install it (and pkg-config, which finds it) when missing.
if ! pkg-config --exists opus 2>/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "hubd needs libopus-dev and pkg-config: run as root or install them" >&2; exit 1
  fi
  echo "installing libopus-dev and pkg-config…"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libopus-dev pkg-config
fi

echo "building (release)…"
cargo build --release --quiet -p control-plane -p hubd

pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

target/release/control-plane serve --data-dir "$state/control-plane" --http "$cp_http" --sync "$cp_sync" \
  > "$state/control-plane.out" 2> "$state/control-plane.log" &
pids+=($!)

wait_for() { # file pattern process
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "failed to start; see ${1%.out}.log:"; tail -5 "${1%.out}.log"; exit 1; }
    sleep 0.1
  done
  echo "timed out waiting for $1"; exit 1
}
wait_for "$state/control-plane.out" "First admin\|Accounts:" "${pids[0]}"

if [ ! -f "$state/hub/sync/enrollment.json" ]; then
  token=$(target/release/control-plane hub enroll --data-dir "$state/control-plane" \
            --name "Demo hub" --id hub-demo --centre "Demo centre" --create-centre | grep '^vss1\.')
  target/release/hubd enroll --control-plane "$cp_sync" --token "$token" --data-dir "$state/hub"
fi

target/release/hubd demo --slots "$slots" --api "$hub_api" --data-dir "$state/hub" \
  > "$state/hub.out" 2> "$state/hub.log" &
pids+=($!)
wait_for "$state/hub.out" "/api/slots" "${pids[1]}"

credentials="$state/admin-credentials"
if grep -q "First admin" "$state/control-plane.out"; then
  awk '/First admin/ {print $3, $5}' "$state/control-plane.out" > "$credentials"
  chmod 600 "$credentials"
fi
read -r email password < "$credentials" 2>/dev/null || { email="(unknown: delete .demo to start afresh)"; password=""; }

cat <<TXT

VSS Demiurge is up.
  Web admin (API until the web admin exists): http://$cp_http/api
  OpenAPI document:                          http://$cp_http/api/openapi.json
  First admin:                               $email  $password
  Log in:  curl -s -X POST http://$cp_http/api/auth/login -H 'content-type: application/json' \\
             -d '{"email":"$email","password":"$password"}'
  Slots as the hub reports them:             GET http://$cp_http/api/slots  (with the token from the login)
  Hub fleet endpoint (QUIC, mutual TLS):     $cp_sync
  Hub hub-demo, $slots simulated slots, local API: http://$hub_api/api/slots   (target/release/hubd status --api $hub_api)
  Logs:    $state/control-plane.log, $state/hub.log
Press Ctrl-C to stop.
TXT
wait -n "${pids[@]}"
