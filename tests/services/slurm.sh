#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the slow tests of `rdbench run --launcher slurm`:
# Debian's slurm-wlm and munge (installed where missing), munged as the munge user, slurmctld
# and slurmd from a generated slurm.conf (proctrack/linuxproc, task/none: no cgroups needed),
# the node's CPUs. Idempotent: daemons already running are kept. Prints "ready" on its last
# line, or exits 1 with one line saying why it cannot (not root, no apt-get, a daemon that
# does not start). About two minutes the first time (mostly apt-get and the node registering).
set -u
say() { echo "$*"; }
fail() { echo "$*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "a SLURM for the tests needs root (apt-get install slurm-wlm munge, daemons)"
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "no slurmctld or munged here, and no apt-get to install them"
  export DEBIAN_FRONTEND=noninteractive
  log=/tmp/rdbench-slurm-apt.log
  apt-get install -y slurm-wlm munge >"$log" 2>&1 || { apt-get update >>"$log" 2>&1 && apt-get install -y slurm-wlm munge >>"$log" 2>&1; } \
    || fail "apt-get install slurm-wlm munge failed (see $log)"
fi

# munge: the key, its socket folder, the daemon as the munge user
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
fi
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
fi
munge -n | unmunge >/dev/null 2>&1 || fail "munge does not work (munge -n | unmunge)"

# slurm.conf for this one node, unless a real one is there
host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
conf=/etc/slurm/slurm.conf
marker="# written by rdbench tests/services/slurm.sh"
if [ -e "$conf" ] && ! head -1 "$conf" | grep -qF "$marker"; then
  sinfo >/dev/null 2>&1 || fail "$conf exists (not written by these tests) but SLURM does not answer"
else
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat >"$conf" <<CONF
$marker
ClusterName=rdbench-tests
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=60
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  pgrep -x slurmctld >/dev/null || slurmctld || fail "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
  pgrep -x slurmd >/dev/null || slurmd || fail "slurmd did not start (see /var/log/slurm/slurmd.log)"
fi

# wait for the node to register and be usable
for _ in $(seq 1 120); do
  state=$(sinfo --noheader --format=%t 2>/dev/null | head -1)
  case "$state" in
    idle|mix|alloc) say "ready"; exit 0 ;;
    down*|drain*|drng*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 ;;
  esac
  sleep 1
done
fail "the SLURM node did not come up (state '${state:-none}'; see /var/log/slurm/)"
