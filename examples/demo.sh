#!/bin/sh
# The README's first command: set up this Debian host, start the jailer
# services (DNS, the log collector) and the agent, bring up the hello example
# and a client on the embedded defaults (file-backed ZFS pool, SQLite store,
# subnet 198.51.100.0/24), then show what rex gives a jail: the page fetched
# by name, the records, the jail's own log lines, its TLS identity.
#
# Everything runs inside the network namespace "rex-demo", so the bridge rex0,
# the jails' interfaces, unbound and the collector never touch this machine's
# real network.
#   sudo examples/demo.sh          bring it up (idempotent)
#   sudo examples/demo.sh clean    stop what it started (by PID), remove it all
#
# REX_ROOT (default /var/lib/rexcarcer), REX_ZONE, and for tests REX_DEMO_POOL
# (rexpool) and REX_DEMO_NETNS (rex-demo) choose where it lives.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

ROOT=${REX_ROOT:-/var/lib/rexcarcer}
POOL=${REX_DEMO_POOL:-rexpool}
NS=${REX_DEMO_NETNS:-rex-demo}
ZONE=${REX_ZONE:-rex.internal}
export REX_DATASET="$POOL/rex"
AGENT_PID="$ROOT/demo-agent.pid"
rex() { nsenter --net=/run/netns/$NS "$top/.venv/bin/rex" --root "$ROOT" "$@"; }
say() { printf '\n==> %s\n' "$*"; }

# A PID from $1 that still names the process the demo started (not a recycled PID).
demo_pid() {
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--root $ROOT agent" || return 1
  echo "$pid"
}

# Stop the agent the demo started, by its recorded PID, and wait until it is gone.
stop_agent() {
  if pid=$(demo_pid "$AGENT_PID"); then
    kill "$pid" 2>/dev/null || true
    i=0
    while [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do
      i=$((i + 1)); [ $i -lt 100 ] || { kill -9 "$pid" 2>/dev/null || true; break; }
      sleep 0.1
    done
    echo "stopped the agent ($pid)"
  fi
  rm -f "$AGENT_PID"
}

if [ "${1:-}" = clean ]; then
  stop_agent
  if [ -e /run/netns/$NS ]; then
    rex host serve --stop || true   # unbound and the collector, by their recorded PIDs
    for j in hello client; do rex destroy "$j" 2>/dev/null || true; done
    rex base rm busybox 2>/dev/null || true
  fi
  zpool destroy "$POOL" 2>/dev/null || true
  rm -rf "$ROOT/pool.img" "$ROOT/mnt" "$ROOT/busybox-root" "$ROOT/demo-agent.log"
  if [ -f "$ROOT/.made-by-demo" ]; then
    rm -rf "$ROOT"   # the demo made the state directory: nothing else lives in it
  fi
  ip netns del $NS 2>/dev/null || true
  echo "cleaned"
  exit 0
fi

# A run that does not finish (an error, ^C, a timeout's SIGTERM) stops the
# daemons it started itself, by PID: nothing of a failed run keeps running (or
# keeps a descriptor its caller holds, such as a lock). A run that finishes
# leaves them up for the reader; `demo.sh clean` stops them.
started_serve=no
started_agent=no
on_exit() {
  status=$?
  trap - EXIT INT TERM
  if [ "$status" -ne 0 ]; then
    [ "$started_agent" = no ] || stop_agent >&2
    [ "$started_serve" = no ] || rex host serve --stop >&2 || true
  fi
  exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/setup >/dev/null
if [ ! -d "$ROOT" ]; then
  mkdir -p "$ROOT"
  touch "$ROOT/.made-by-demo"
fi
if ! zpool list -H -o name "$POOL" >/dev/null 2>&1; then
  say "creating the file-backed pool $POOL ($ROOT/pool.img)"
  truncate -s 2G "$ROOT/pool.img"
  zpool create -o cachefile=none -m "$ROOT/mnt" "$POOL" "$ROOT/pool.img"
fi
[ -e /run/netns/$NS ] || { ip netns add $NS; ip -n $NS link set lo up; }

if ! rex base ls -o json | grep -q '"name": "busybox"'; then
  rm -rf "$ROOT/busybox-root"
  examples/make-busybox-base.sh "$ROOT/busybox-root"
  rex base import "$ROOT/busybox-root" busybox --version 1
fi

say "rex host serve --detach: the jailer services (unbound for DNS, rsyslog for logs)"
if rex host serve --detach; then
  started_serve=yes
else
  serve=$?
  [ "$serve" -eq 12 ] || exit "$serve"   # 12: already running (an earlier run)
fi
if ! demo_pid "$AGENT_PID" >/dev/null; then
  say "rex agent: the host's daemon; rex commands now go through its socket"
  # Its own session and no descriptor of ours but the log (3-9 closed: a lock
  # the caller of this script holds must not outlive the script in the agent).
  setsid nsenter --net=/run/netns/$NS "$top/.venv/bin/rex" --root "$ROOT" agent --no-api \
    </dev/null >"$ROOT/demo-agent.log" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
  echo $! >"$AGENT_PID"
  started_agent=yes
  i=0
  until [ -S "$ROOT/run/agent.sock" ]; do
    i=$((i + 1)); [ $i -lt 100 ] || { cat "$ROOT/demo-agent.log" >&2; exit 1; }
    sleep 0.1
  done
fi

say "rex up examples/hello/hello.rex"
rex up examples/hello/hello.rex
say "rex up examples/hello/client.rex"
rex up examples/hello/client.rex
say "rex ls"
rex ls

for name in "hello.jail.$ZONE" "web.svc.$ZONE"; do
  say "rex exec client -- wget -qO- http://$name/"
  rex exec client -- wget -qO- "http://$name/"
done

say "rex dns ls"
rex dns ls

say "rex logs hello (the jail's syslog, collected on the host)"
i=0
until [ -n "$(rex logs hello)" ]; do   # a UDP datagram away from /etc/rc
  i=$((i + 1)); [ $i -lt 50 ] || break
  sleep 0.1
done
rex logs hello

say "rex ca show hello (its TLS identity, from the cluster CA)"
rex ca show hello
pem=$(mktemp -d)
rex exec hello -- cat /etc/ssl/rc/host.crt >"$pem/host.crt"
rex exec hello -- cat /etc/ssl/rc/cluster.crt >"$pem/cluster.crt"
# host.crt is the jail's certificate followed by its host's jail CA (docs/identity.md)
say "openssl verify -CAfile cluster.crt -untrusted host.crt -verify_hostname hello.jail.$ZONE host.crt (files from the jail)"
openssl verify -CAfile "$pem/cluster.crt" -untrusted "$pem/host.crt" \
  -verify_hostname "hello.jail.$ZONE" "$pem/host.crt"
rm -rf "$pem"

say "done: names, logs and identity; \`examples/demo.sh clean\` stops and removes it all"
