#!/usr/bin/env bash
# Start a throw-away Slurm (controller + one or more nodes, each 4 CPUs and 4 fake GPUs)
# for tsrx's tests and for trying `tsrx submit` by hand. Needs root.
#
#   sudo slurm/start.sh            # one node "localhost"; installs the Debian packages when missing
#   sudo slurm/start.sh --nodes 2  # nodes tsrx-n1, tsrx-n2 (same as TSRX_SLURM_NODES=2)
#   . /tmp/tsrx-slurm/env.sh       # SLURM_CONF and the sacct stand-in on PATH
#   sinfo; tsrx submit experiments/uncertainty_grid.toml --set ... ; slurm/stop.sh
#
# With N >= 2 nodes, one slurmd per node runs on this host (`slurmd -N tsrx-nI`, each its
# own port); partition "debug" (the default) holds tsrx-n1 only, so single-node jobs queue
# as on the one-node cluster, and partition "multi" holds every node. The node names are
# added to /etc/hosts (127.0.0.1, marked "# tsrx-slurm", removed by stop.sh) unless they
# resolve already: a job's first node is its DDP master address.
#
# TSRX_SLURM_ROOT (default /tmp/tsrx-slurm) holds config, state, logs and fake devices.
# Facts behind the settings: /work/shared/notes/slurm-single-node.md.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="${TSRX_SLURM_ROOT:-/tmp/tsrx-slurm}"
WAIT_S="${TSRX_SLURM_WAIT_S:-60}"
NODES="${TSRX_SLURM_NODES:-1}"
HOSTS_MARK="# tsrx-slurm"

die() { echo "slurm/start.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) [ $# -ge 2 ] || die "--nodes needs a number"; NODES="$2"; shift 2 ;;
    --nodes=*) NODES="${1#--nodes=}"; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (expected --nodes N)" ;;
  esac
done
case "$NODES" in
  ''|*[!0-9]*) die "number of nodes '$NODES' (--nodes / TSRX_SLURM_NODES): expected an integer 1-16" ;;
esac
[ "$NODES" -ge 1 ] && [ "$NODES" -le 16 ] || die "number of nodes $NODES: expected 1-16"
[ "$(id -u)" = 0 ] || die "needs root (daemons run as root and fake GPUs need mknod)"
export PATH="$PATH:/usr/sbin:/sbin"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm/start.sh: installing slurmctld slurmd slurm-client munge" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

# A previous instance (ours) is stopped first: start always gives a clean cluster.
if compgen -G "$ROOT/run/slurm*.pid" >/dev/null; then
  "$HERE/stop.sh" --keep-munge || true
fi
rm -rf "$ROOT/state" "$ROOT/spool"
mkdir -p "$ROOT"/{etc,state,spool,run,log,dev,bin}

# Node names: "localhost" alone keeps the one-node cluster independent of name resolution.
if [ "$NODES" = 1 ]; then
  NAMES=(localhost)
else
  NAMES=(); for i in $(seq 1 "$NODES"); do NAMES+=("tsrx-n$i"); done
fi

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

# Every node advertises 80% of the memory: nodes of one host overcommit it, as tests expect.
MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
NODE_SPEC="CPUs=4 Boards=1 SocketsPerBoard=1 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=$MEM_MB Gres=gpu:4 State=UNKNOWN"
{
  sed -e "s#@ROOT@#$ROOT#g" "$HERE/slurm.conf.in"
  if [ "$NODES" = 1 ]; then
    echo "NodeName=localhost NodeAddr=127.0.0.1 $NODE_SPEC"
    echo "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP"
  else
    echo "# Several nodes on this host: each slurmd listens on its own Port."
    for i in $(seq 1 "$NODES"); do
      echo "NodeName=tsrx-n$i NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((17000 + i)) $NODE_SPEC"
    done
    echo "# debug: one node, so single-node jobs queue as on the one-node cluster; multi: all."
    echo "PartitionName=debug Nodes=tsrx-n1 Default=YES MaxTime=INFINITE State=UP"
    echo "PartitionName=multi Nodes=tsrx-n[1-$NODES] MaxTime=INFINITE State=UP"
  fi
} > "$ROOT/etc/slurm.conf"
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

# A job's first node is its master address (tsrx/engine/distributed.py): the names must
# resolve. A real cluster has DNS; here they all point at this host.
if [ "$NODES" -gt 1 ]; then
  missing=()
  for n in "${NAMES[@]}"; do getent hosts "$n" >/dev/null || missing+=("$n"); done
  if [ ${#missing[@]} -gt 0 ]; then
    # in place (not a rename): /etc/hosts is often a bind mount in containers
    echo "127.0.0.1 ${missing[*]} $HOSTS_MARK" >> /etc/hosts \
      || die "cannot add ${missing[*]} to /etc/hosts; make the names resolve to 127.0.0.1 another way"
  fi
  for n in "${NAMES[@]}"; do
    getent hosts "$n" >/dev/null || die "node name $n does not resolve after adding it to /etc/hosts"
  done
fi

slurmctld -c -f "$SLURM_CONF"
for n in "${NAMES[@]}"; do
  mkdir -p "$ROOT/spool/$n"
  slurmd -N "$n" -f "$SLURM_CONF"
done

deadline=$((SECONDS + WAIT_S))
until [ "$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)" -ge "$NODES" ]; do
  if [ $SECONDS -ge $deadline ]; then
    echo "slurm/start.sh: not all $NODES node(s) idle after ${WAIT_S}s; sinfo and last log lines:" >&2
    sinfo -N >&2 || true
    tail -n 20 "$ROOT/log/slurmctld.log" "$ROOT"/log/slurmd-*.log >&2 || true
    exit 1
  fi
  sleep 0.5
done
if [ "$NODES" = 1 ]; then
  echo "slurm/start.sh: Slurm is up (partition debug, node localhost: 4 CPUs, gpu:4); . $ROOT/env.sh"
else
  echo "slurm/start.sh: Slurm is up: nodes tsrx-n[1-$NODES] (each 4 CPUs, gpu:4), partition debug (tsrx-n1, default) and multi (all nodes); . $ROOT/env.sh"
fi
