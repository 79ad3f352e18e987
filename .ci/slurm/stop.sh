#!/usr/bin/env bash
# Stop the slurmctld and slurmd that .ci/slurm/setup.sh started (by their pid files); munged stays.
for pidfile in /run/slurmctld.pid /run/slurmd.pid; do
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" && echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
  fi
done
