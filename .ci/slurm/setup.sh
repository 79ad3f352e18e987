#!/usr/bin/env bash
# Start a single-node SLURM on this machine (munged, slurmctld, slurmd) for tests/cluster/test_slurm.py.
#
# Source it:  . .ci/slurm/setup.sh
# On success it exports MOSAIC_TEST_SLURM=1; otherwise it exports MOSAIC_TEST_SLURM_SKIP with the
# reason, prints it, and returns 0 so that CI goes on (the SLURM test then skips with that reason).
# Needs root and apt-get (Debian): installs slurm-wlm and munge when sbatch is missing.
# Daemons from an earlier run are stopped first and the controller starts with cleared state;
# those started here are left running (CI machines are thrown away; on a workstation stop them
# with .ci/slurm/stop.sh).

_slurm_skip() {
  export MOSAIC_TEST_SLURM_SKIP="$1"
  unset MOSAIC_TEST_SLURM
  echo "ci: SLURM not started: $1" >&2
}

_slurm_setup() {
  local t0 host ncpu mem_mb conf_dir log_dir spool i
  t0=$(date +%s)
  if [ "$(id -u)" != 0 ]; then _slurm_skip "not root (uid $(id -u)): cannot install or start slurmctld/slurmd"; return 0; fi
  if ! command -v sbatch >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    if ! command -v apt-get >/dev/null; then _slurm_skip "slurm is not installed and apt-get is missing (not Debian/Ubuntu)"; return 0; fi
    echo "ci: installing slurm-wlm and munge with apt-get"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge; } >/tmp/mosaic-slurm-apt.log 2>&1; then
      tail -5 /tmp/mosaic-slurm-apt.log >&2
      _slurm_skip "apt-get install slurm-wlm munge failed (log: /tmp/mosaic-slurm-apt.log)"; return 0
    fi
  fi

  host=$(hostname -s)
  ncpu=$(nproc)
  # leave the OS 512 MiB; slurmd refuses a node that reports less memory than RealMemory
  mem_mb=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 512 ))
  conf_dir=/etc/slurm
  log_dir=/var/log/slurm
  spool=/var/spool/slurm-mosaic
  mkdir -p "$conf_dir" "$log_dir" "$spool/ctld" "$spool/d"

  # stale daemons and state from an earlier run
  for pidfile in /run/slurmctld.pid /run/slurmd.pid; do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  for i in $(seq 50); do
    pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break
    sleep 0.1
  done
  rm -rf "${spool:?}/ctld/"* "${spool:?}/d/"*

  cat >"$conf_dir/slurm.conf" <<CONF
# single-node SLURM for mosaic's CI (.ci/slurm/setup.sh); no cgroups, no accounting
ClusterName=mosaic-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$spool/ctld
SlurmdSpoolDir=$spool/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  # slurmd looks for cgroup.conf only with cgroup plugins; an old one would not hurt, but say none
  rm -f "$conf_dir/cgroup.conf"

  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    if id munge >/dev/null 2>&1; then
      runuser -u munge -- /usr/sbin/munged || { _slurm_skip "munged did not start"; return 0; }
    else
      /usr/sbin/munged --force || { _slurm_skip "munged did not start"; return 0; }
    fi
  fi
  if ! munge -n | unmunge >/dev/null 2>&1; then _slurm_skip "munge credentials do not round-trip (munge -n | unmunge)"; return 0; fi

  slurmctld -c || { _slurm_skip "slurmctld did not start (log: $log_dir/slurmctld.log)"; return 0; }
  slurmd || { _slurm_skip "slurmd did not start (log: $log_dir/slurmd.log)"; return 0; }

  for i in $(seq 60); do
    state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null | head -1)
    case "$state" in idle) break ;; down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;; esac
    sleep 0.5
  done
  if [ "$state" != idle ]; then
    tail -5 "$log_dir/slurmctld.log" "$log_dir/slurmd.log" >&2 2>/dev/null || true
    _slurm_skip "node $host did not become idle in 30 s (sinfo state: ${state:-none})"; return 0
  fi
  export MOSAIC_TEST_SLURM=1
  unset MOSAIC_TEST_SLURM_SKIP
  echo "ci: single-node SLURM up in $(( $(date +%s) - t0 )) s: node $host, $ncpu CPUs, ${mem_mb} MB"
  sinfo
}

_slurm_setup
