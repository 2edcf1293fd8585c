#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for tests/test_launcher.py: munge with a generated key, slurmctld and
# slurmd from Debian's packages, one partition, no cgroups (proctrack/linuxproc, task/none), no accounting daemon.
# Run as root (or with sudo); source it, or read the last line it prints, to get HARNESS_TEST_SLURM=1.
set -euo pipefail
as_root=""
if [ "$(id -u)" -ne 0 ]; then as_root="sudo"; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
conf_dir=/etc/slurm
$as_root mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/munge
[ -s /etc/munge/munge.key ] || $as_root dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
if id munge >/dev/null 2>&1; then
  $as_root chown munge:munge /etc/munge/munge.key /run/munge
  $as_root chmod 400 /etc/munge/munge.key
fi
$as_root tee "$conf_dir/slurm.conf" >/dev/null <<CONF
ClusterName=harness-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
pgrep -x munged >/dev/null || $as_root runuser -u munge -- munged --force 2>/dev/null || $as_root munged --force
pgrep -x slurmctld >/dev/null || $as_root slurmctld
pgrep -x slurmd >/dev/null || $as_root slurmd
for _ in $(seq 60); do
  if timeout 20 srun -N1 -n1 -t 1 hostname >/dev/null 2>&1; then
    $as_root scontrol update NodeName="$host" State=RESUME 2>/dev/null || true
    echo "slurm up on $host ($cpus CPUs)"
    echo "export HARNESS_TEST_SLURM=1"
    exit 0
  fi
  $as_root scontrol update NodeName="$host" State=RESUME 2>/dev/null || true
  sleep 1
done
echo "slurm did not come up: see /var/log/slurm/" >&2
exit 1
