#!/usr/bin/env bash
# Start a throw-away single-node Slurm (controller + node "localhost", 4 CPUs, 4 fake
# GPUs) for tsrx's tests and for trying `tsrx submit` by hand. Needs root.
#
#   sudo slurm/start.sh            # installs the Debian packages when missing
#   . /tmp/tsrx-slurm/env.sh       # SLURM_CONF and the sacct stand-in on PATH
#   sinfo; tsrx submit experiments/uncertainty_grid.toml --set ... ; slurm/stop.sh
#
# TSRX_SLURM_ROOT (default /tmp/tsrx-slurm) holds config, state, logs and fake devices.
# Facts behind the settings: /work/shared/notes/slurm-single-node.md.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="${TSRX_SLURM_ROOT:-/tmp/tsrx-slurm}"
WAIT_S="${TSRX_SLURM_WAIT_S:-60}"

die() { echo "slurm/start.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (daemons run as root and fake GPUs need mknod)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm/start.sh: installing slurmctld slurmd slurm-client munge" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

# A previous instance (ours) is stopped first: start always gives a clean cluster.
if [ -f "$ROOT/run/slurmctld.pid" ] || [ -f "$ROOT/run/slurmd.pid" ]; then
  "$HERE/stop.sh" --keep-munge || true
fi
rm -rf "$ROOT/state" "$ROOT/spool"
mkdir -p "$ROOT"/{etc,state,spool,run,log,dev,bin}

# munge: no systemd here, so the runtime dir, key and daemon are ours to make.
if ! pgrep -x munged >/dev/null; then
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$ROOT/run/munged.ours"
fi

for i in 0 1 2 3; do
  [ -c "$ROOT/dev/fakegpu$i" ] || { rm -f "$ROOT/dev/fakegpu$i"; mknod -m 666 "$ROOT/dev/fakegpu$i" c 195 "$i"; }
done

MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
sed -e "s#@ROOT@#$ROOT#g" -e "s#@MEM@#$MEM_MB#g" "$HERE/slurm.conf.in" > "$ROOT/etc/slurm.conf"
sed -e "s#@ROOT@#$ROOT#g" "$HERE/gres.conf.in" > "$ROOT/etc/gres.conf"
install -m 0755 "$HERE/sacct" "$ROOT/bin/sacct"
export SLURM_CONF="$ROOT/etc/slurm.conf"
cat > "$ROOT/env.sh" <<ENV
export SLURM_CONF="$ROOT/etc/slurm.conf"
export PATH="$ROOT/bin:\$PATH"
ENV
# Clients that do not see SLURM_CONF look in /etc/slurm: point it here unless a real
# configuration is already there.
mkdir -p /etc/slurm
if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
  ln -sfn "$ROOT/etc/slurm.conf" /etc/slurm/slurm.conf
  touch "$ROOT/run/etc-link.ours"
fi

slurmctld -c -f "$SLURM_CONF"
slurmd -N localhost -f "$SLURM_CONF"

deadline=$((SECONDS + WAIT_S))
until [ "$(sinfo -h -n localhost -o %t 2>/dev/null | head -n1)" = "idle" ]; do
  if [ $SECONDS -ge $deadline ]; then
    echo "slurm/start.sh: node not idle after ${WAIT_S}s; last log lines:" >&2
    tail -n 20 "$ROOT/log/slurmctld.log" "$ROOT/log/slurmd.log" >&2 || true
    exit 1
  fi
  sleep 0.5
done
echo "slurm/start.sh: Slurm is up (partition debug, node localhost: 4 CPUs, gpu:4); . $ROOT/env.sh"
