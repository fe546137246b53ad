#!/usr/bin/env bash
# Runs a worker the way a deployment's supervisor (systemd, Kubernetes) does:
# when it exits 0 -- a drained worker, e.g. during `tickfetch rollout` -- it is
# started again, with the version in $VERSION_FILE (when set and not empty) as
# its `cluster.version`; any other exit ends the supervisor with that status.
# SIGTERM/SIGINT are passed on to the worker, which hands its feeds over.
#
#   VERSION_FILE=version scripts/supervise.sh target/debug/tickfetch-ingest --worker-id w1
set -u
child=
stop() {
  if [[ -n "$child" ]]; then kill -TERM "$child" 2>/dev/null; wait "$child"; fi
  exit 143
}
trap stop TERM INT
while true; do
  if [[ -n "${VERSION_FILE:-}" && -s "$VERSION_FILE" ]]; then
    export TICKFETCH__CLUSTER__VERSION="\"$(tr -d '[:space:]' < "$VERSION_FILE")\""
  fi
  "$@" &
  child=$!
  wait "$child"
  status=$?
  child=
  if [[ $status -ne 0 ]]; then
    exit "$status"
  fi
  echo "supervise: $1 exited 0; starting it again" >&2
done
