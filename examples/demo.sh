#!/bin/sh
# The README's first command: set up this Debian host and bring up the hello
# example on the embedded defaults (file-backed ZFS pool, SQLite store,
# subnet 198.51.100.0/24), then fetch its page from a second jail.
#
# Everything runs inside the network namespace "rex-demo", so the bridge rex0
# and the jails' interfaces never touch this machine's real network.
#   sudo examples/demo.sh          bring it up (idempotent)
#   sudo examples/demo.sh clean    destroy the jails, the pool and the namespace
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
scripts/setup >/dev/null

ROOT=${REX_ROOT:-/var/lib/rexcarcer}
POOL=rexpool
NS=rex-demo
rex() { nsenter --net=/run/netns/$NS "$top/.venv/bin/rex" --root "$ROOT" "$@"; }

if [ "${1:-}" = clean ]; then
  for j in hello client; do rex destroy "$j" 2>/dev/null || true; done
  rex base rm busybox 2>/dev/null || true
  zpool destroy "$POOL" 2>/dev/null || true
  rm -f "$ROOT/pool.img"
  ip netns del $NS 2>/dev/null || true
  echo "cleaned"
  exit 0
fi

mkdir -p "$ROOT"
if ! zpool list -H -o name "$POOL" >/dev/null 2>&1; then
  echo "==> creating the file-backed pool $POOL ($ROOT/pool.img)"
  truncate -s 2G "$ROOT/pool.img"
  zpool create -o cachefile=none -m "$ROOT/mnt" "$POOL" "$ROOT/pool.img"
fi
[ -e /run/netns/$NS ] || { ip netns add $NS; ip -n $NS link set lo up; }

if ! rex base ls -o json | grep -q '"name": "busybox"'; then
  rm -rf "$ROOT/busybox-root"
  examples/make-busybox-base.sh "$ROOT/busybox-root"
  rex base import "$ROOT/busybox-root" busybox --version 1
fi

rex up examples/hello/hello.rex
rex up examples/hello/client.rex
rex ls
ip=$(rex ls -o json | .venv/bin/python -c 'import json,sys; print([j for j in json.load(sys.stdin) if j["name"]=="hello"][0]["ips"][0].split("/")[0])')
echo "==> rex exec client -- wget -qO- http://$ip/"
rex exec client -- wget -qO- "http://$ip/"
