#!/usr/bin/env bash
# A real SLURM cluster on one machine (Debian slurm-wlm + munge): for tests, demos and anyone
# without a cluster at hand. Needs root.
#
#   launch/slurm/local_cluster.sh up DIR [--nodes N] [--cpus C]   # start; prints the env to source
#   source DIR/env                                               # sbatch/squeue/... now talk to it
#   launch/slurm/local_cluster.sh down DIR                       # stop it (idempotent)
#   launch/slurm/local_cluster.sh install                        # apt-get install slurm-wlm munge
#   launch/slurm/local_cluster.sh kill-node DIR NODE             # lose a node: its slurmd and jobs
#   launch/slurm/local_cluster.sh start-node DIR NODE            # bring it back (waits for idle)
#
# Layout: one network namespace "ctl" holds a private bridge (SUBNET.1) and runs slurmctld;
# every node node1..nodeN is a namespace of its own on that bridge (SUBNET.(10+i)) with its own
# hostname and a private /etc/hosts naming all of them, running one slurmd. Nothing touches the
# machine's own network: the bridge and veth pairs live inside the namespaces, which vanish with
# their processes, so two clusters (two DIRs) can run at once even on the same subnet and ports.
# Nodes have no route off the subnet. Clients reach slurmctld through wrappers in DIR/bin that
# enter the ctl namespace (DIR/env puts them first on PATH and sets SLURM_CONF).
#
# Everything lives under DIR: slurm.conf, munge key and socket, spool, state, logs, pid files,
# jobcomp.txt (job id, state and exit code of every ended job). munged runs as root with its own
# key and socket. `down` stops only what `up` started, by the pids recorded in DIR/pids.
#
# Environment: LOCAL_CLUSTER_SUBNET (10.213.0: the first three octets of the /24),
# LOCAL_CLUSTER_PORT (6817: slurmctld; slurmd uses PORT+1), LOCAL_CLUSTER_TIMEOUT (60 s for
# nodes to become idle).
set -euo pipefail

usage="usage: local_cluster.sh up DIR [--nodes N] [--cpus C] | down DIR | install | kill-node DIR NODE | start-node DIR NODE"
SUBNET=${LOCAL_CLUSTER_SUBNET:-10.213.0}
PORT=${LOCAL_CLUSTER_PORT:-6817}
TIMEOUT=${LOCAL_CLUSTER_TIMEOUT:-60}
CLIENTS="sbatch srun salloc squeue scontrol scancel sinfo sacct sstat"

die() { echo "local_cluster: $*" >&2; exit 1; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  command -v apt-get >/dev/null || die "slurmctld/slurmd/munged not found: install Debian's slurm-wlm and munge"
  echo "local_cluster: installing slurm-wlm munge with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends slurm-wlm munge >&2
}

# holder NAME PIDFILE: a process in new network, UTS and mount namespaces with hostname NAME and
# DIR/etc/hosts bound on /etc/hosts (inside its mount namespace only); its pid goes to PIDFILE.
holder() {
  local name=$1 pidfile=$2
  rm -f "$pidfile"
  setsid unshare --net --uts --mount --propagation private sh -c \
    'echo $$ > "$1"; hostname "$2"; mount --bind "$3" /etc/hosts; ip link set lo up; exec sleep infinity' \
    sh "$pidfile" "$name" "$DIR/etc/hosts" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 50); do [ -s "$pidfile" ] && return 0; sleep 0.1; done
  die "the namespace for $name did not start"
}

in_ns() { local pid=$1; shift; nsenter -t "$pid" -n -u -m -- "$@"; }

start_slurmd() {  # NODE
  local node=$1 pid
  pid=$(cat "$DIR/pids/ns-$node")
  in_ns "$pid" env SLURM_CONF="$DIR/slurm.conf" slurmd -N "$node" -f "$DIR/slurm.conf" \
    || die "slurmd on $node did not start: $(tail -n 1 "$DIR/log/slurmd-$node.log" 2>/dev/null)"
}

# wait_idle NODE...: until sinfo says idle for each, or a clear error naming the node.
wait_idle() {
  local deadline=$((SECONDS + TIMEOUT)) node state
  for node in "$@"; do
    while :; do
      state=$("$DIR/bin/sinfo" -h -N -n "$node" -o %T 2>/dev/null | head -n 1 || true)
      [ "$state" = idle ] && break
      if [ "$SECONDS" -ge "$deadline" ]; then
        die "node $node is not idle after ${TIMEOUT}s (state '${state:-unknown}'); its log says: $(tail -n 1 "$DIR/log/slurmd-$node.log" 2>/dev/null || echo nothing)"
      fi
      sleep 0.5
    done
  done
}

write_config() {  # NODES CPUS
  local nodes=$1 cpus=$2 i
  {
    echo "127.0.0.1 localhost"
    echo "$SUBNET.1 ctl"
    for i in $(seq "$nodes"); do echo "$SUBNET.$((10 + i)) node$i"; done
  } > "$DIR/etc/hosts"
  cat > "$DIR/slurm.conf" <<EOF
# Written by launch/slurm/local_cluster.sh: $nodes nodes x $cpus CPUs, no GPU, no cgroup, no database.
ClusterName=local
SlurmctldHost=ctl($SUBNET.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a job credential lives, and so how long SLURM holds a requeued job
# (BeginTime) before it may start again: until then the nodes refuse the job id they revoked at
# the requeue ("Job credential revoked"). 120 s by default; 20 s keeps the tests' requeue short.
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=20
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/pids/slurmctld.pid
SlurmdPidFile=$DIR/pids/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Pending jobs are looked at every 5 s (60 by default): a requeued job starts soon after its hold.
SchedulerParameters=sched_interval=5
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=30
# Ended jobs stay in scontrol show job for an hour; jobcomp.txt keeps every one.
MinJobAge=3600
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
KillWait=10
InactiveLimit=0
NodeName=node[1-$nodes] NodeAddr=$SUBNET.[11-$((10 + nodes))] CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  # NodeAddr ranges need as many addresses as nodes; spell them out to be safe.
  local addrs=""
  for i in $(seq "$nodes"); do addrs+="${addrs:+,}$SUBNET.$((10 + i))"; done
  sed -i "s|^NodeName=.*|NodeName=node[1-$nodes] NodeAddr=$addrs NodeHostname=node[1-$nodes] CPUs=$cpus State=UNKNOWN|" "$DIR/slurm.conf"
  cat > "$DIR/env" <<EOF
export SLURM_CONF=$DIR/slurm.conf
export PATH=$DIR/bin:\$PATH
EOF
  mkdir -p "$DIR/bin"
  local client
  for client in $CLIENTS; do
    cat > "$DIR/bin/$client" <<WRAPPER
#!/bin/sh
# $client in the cluster's ctl namespace, the only place its slurmctld is reachable from this
# machine; inside a job (a node's srun, scontrol) it is reachable already.
[ -z "\${SLURM_JOB_ID:-}" ] || exec $(command -v "$client") "\$@"
exec nsenter -t "\$(cat $DIR/pids/ns-ctl)" -n -- env SLURM_CONF=$DIR/slurm.conf $(command -v "$client") "\$@"
WRAPPER
    chmod +x "$DIR/bin/$client"
  done
}

up() {
  local nodes=2 cpus=4 i pid
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) nodes=${2:?--nodes needs a number}; shift ;;
      --cpus) cpus=${2:?--cpus needs a number}; shift ;;
      *) die "unknown argument '$1'; $usage" ;;
    esac
    shift
  done
  [[ "$nodes" =~ ^[1-9][0-9]?$ ]] || die "--nodes must be 1-99, got '$nodes'"
  [[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive integer, got '$cpus'"
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, slurmd as root)"
  if [ -s "$DIR/pids/ns-ctl" ] && kill -0 "$(cat "$DIR/pids/ns-ctl")" 2>/dev/null; then
    die "a cluster already runs in $DIR (local_cluster.sh down $DIR first)"
  fi
  install_packages
  rm -rf "$DIR"
  mkdir -p "$DIR"/{etc,munge,state,spool,log,pids}
  chmod 755 "$DIR"
  write_config "$nodes" "$cpus"

  # munge: its own key, socket, pid, log and seed files.
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$DIR/munge/munge.key"
  chmod 700 "$DIR/munge"
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/pids/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed" \
    || die "munged did not start: $(tail -n 1 "$DIR/log/munged.log" 2>/dev/null)"

  # The ctl namespace with the bridge; one veth pair per node, its far end moved into the node.
  holder ctl "$DIR/pids/ns-ctl"
  local ctl
  ctl=$(cat "$DIR/pids/ns-ctl")
  nsenter -t "$ctl" -n ip link add br0 type bridge
  nsenter -t "$ctl" -n ip addr add "$SUBNET.1/24" dev br0
  nsenter -t "$ctl" -n ip link set br0 up
  for i in $(seq "$nodes"); do
    holder "node$i" "$DIR/pids/ns-node$i"
    pid=$(cat "$DIR/pids/ns-node$i")
    nsenter -t "$ctl" -n ip link add "veth$i" type veth peer name eth0 netns "/proc/$pid/ns/net"
    nsenter -t "$ctl" -n ip link set "veth$i" master br0 up
    nsenter -t "$pid" -n ip addr add "$SUBNET.$((10 + i))/24" dev eth0
    nsenter -t "$pid" -n ip link set eth0 up
  done

  in_ns "$ctl" env SLURM_CONF="$DIR/slurm.conf" slurmctld -f "$DIR/slurm.conf" \
    || die "slurmctld did not start: $(tail -n 1 "$DIR/log/slurmctld.log" 2>/dev/null)"
  for i in $(seq "$nodes"); do mkdir -p "$DIR/spool/node$i"; start_slurmd "node$i"; done
  local names=()
  for i in $(seq "$nodes"); do names+=("node$i"); done
  wait_idle "${names[@]}"
  echo "local_cluster: $nodes nodes x $cpus CPUs idle; logs in $DIR/log, ended jobs in $DIR/jobcomp.txt"
  echo "# source $DIR/env, or:"
  cat "$DIR/env"
}

# ns_pids NSPID: every process in the network namespace of NSPID, the holder itself included.
ns_pids() {
  local want p
  want=$(readlink "/proc/$1/ns/net" 2>/dev/null) || return 0
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$want" ] && echo "${p#/proc/}"
  done
  return 0
}

kill_node() {  # NODE: SIGKILL its slurmd and every job process, keep the namespace
  local node=$1 nspid p
  nspid=$(cat "$DIR/pids/ns-$node" 2>/dev/null) || die "no node $node in $DIR"
  for p in $(ns_pids "$nspid"); do
    [ "$p" = "$nspid" ] || kill -KILL "$p" 2>/dev/null || true
  done
}

start_node() {  # NODE
  start_slurmd "$1"
  wait_idle "$1"
}

down() {
  [ -d "$DIR/pids" ] || return 0
  local f p
  # Daemons first (they clean up their jobs), then whatever still runs inside the namespaces,
  # then the namespace holders (their exit takes the bridge and veth pairs with them).
  for f in "$DIR"/pids/slurmd-*.pid "$DIR/pids/slurmctld.pid"; do
    [ -s "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
  done
  sleep 1
  for f in "$DIR"/pids/ns-*; do
    [ -s "$f" ] || continue
    for p in $(ns_pids "$(cat "$f")"); do kill -KILL "$p" 2>/dev/null || true; done
  done
  [ -s "$DIR/pids/munged.pid" ] && kill -TERM "$(cat "$DIR/pids/munged.pid")" 2>/dev/null || true
  for _ in $(seq 50); do
    local alive=0
    for f in "$DIR"/pids/*; do
      [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for f in "$DIR"/pids/*; do
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  rm -f "$DIR"/pids/*
}

cmd=${1:-}
[ -n "$cmd" ] || die "$usage"
shift
case "$cmd" in
  install) install_packages; exit 0 ;;
esac
DIR=${1:?$usage}
shift
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  kill-node) kill_node "${1:?$usage}" ;;
  start-node) start_node "${1:?$usage}" ;;
  *) die "$usage" ;;
esac
