#!/usr/bin/env bash
# Stop the test Slurm started by slurm/start.sh and remove its state.
#   slurm/stop.sh [--keep-munge] [--keep-logs]
# Only daemons this project started are stopped (pid files under TSRX_SLURM_ROOT): the
# controller and every node's slurmd. Node names start.sh added to /etc/hosts go too.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
ROOT="${TSRX_SLURM_ROOT:-/tmp/tsrx-slurm}"
KEEP_MUNGE=0; KEEP_LOGS=0
for a in "$@"; do
  case "$a" in
    --keep-munge) KEEP_MUNGE=1 ;;
    --keep-logs) KEEP_LOGS=1 ;;
    *) echo "slurm/stop.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
export SLURM_CONF="$ROOT/etc/slurm.conf"

# Cancel what is left, then ask the daemons to stop; kill by pid file if they linger.
if [ -f "$SLURM_CONF" ]; then
  timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
  timeout 10 scontrol shutdown 2>/dev/null || true
fi
for pidfile in "$ROOT"/run/slurmd*.pid "$ROOT/run/slurmctld.pid"; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null; sleep 1
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
done
# Job steps started by slurmd (slurmstepd) end with their jobs; leftovers of ours go too,
# and so do node daemons of ours whose pid file is gone (started with our slurm.conf).
for pid in $(pgrep -x slurmd 2>/dev/null); do
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-f $ROOT/etc/slurm.conf "; then
    kill -TERM "$pid" 2>/dev/null
  fi
done
for pid in $(pgrep -x slurmstepd 2>/dev/null); do
  if grep -qs "$ROOT" "/proc/$pid/cmdline" "/proc/$pid/environ"; then kill -KILL "$pid" 2>/dev/null; fi
done

# Lines start.sh appended for the node names (marked); rewritten in place, since
# /etc/hosts is often a bind mount that cannot be replaced by a rename.
if grep -q ' # tsrx-slurm$' /etc/hosts 2>/dev/null; then
  kept=$(grep -v ' # tsrx-slurm$' /etc/hosts)
  printf '%s\n' "$kept" > /etc/hosts
fi

if [ -f "$ROOT/run/etc-link.ours" ] && [ -L /etc/slurm/slurm.conf ] \
   && [ "$(readlink /etc/slurm/slurm.conf)" = "$ROOT/etc/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
if [ "$KEEP_MUNGE" = 0 ] && [ -f "$ROOT/run/munged.ours" ]; then
  pid=$(cat /run/munge/munged.pid 2>/dev/null || true)
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
  rm -f "$ROOT/run/munged.ours"
fi
MUNGE_MARK=0; [ -f "$ROOT/run/munged.ours" ] && MUNGE_MARK=1
if [ "$KEEP_LOGS" = 1 ]; then
  rm -rf "$ROOT/state" "$ROOT/spool"
else
  rm -rf "$ROOT"
fi
# munged kept running: remember it is still ours to stop later
if [ "$MUNGE_MARK" = 1 ]; then mkdir -p "$ROOT/run" && touch "$ROOT/run/munged.ours"; fi
echo "slurm/stop.sh: stopped"
