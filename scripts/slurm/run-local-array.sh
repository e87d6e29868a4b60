#!/usr/bin/env bash
# Exercises scripts/slurm/eval-array.sbatch on a real single-node Slurm on this machine:
#
# 1. installs Slurm and MUNGE from Debian's packages if missing (apt-get: slurm-wlm,
#    which brings slurmctld, slurmd and the client commands, and munge; needs root);
# 2. writes a minimal single-node slurm.conf (the node as `slurmd -C` describes it) in a
#    private directory (nothing under /etc/slurm is touched) and starts munged (unless
#    one is running), slurmctld and slurmd;
# 3. submits a 3-task array of a fixture-model eval (3 prompts x 3 methods, round-robin
#    into 3 shards) and a merge job that depends on it, and waits for both;
# 4. runs the same eval unsharded, outside Slurm, and checks that the merged results
#    (every line but its `timing`) and summary.json (but its seconds) equal it;
# 5. stops the daemons it started. Exits non-zero if anything differs or fails.
#
# Usage: scripts/slurm/run-local-array.sh [WORK_DIR]   (default: a new temporary dir)
# LATENTEVO_BIN: the binary (default target/debug/latentevo, built with `cargo build`).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
work="${1:-$(mktemp -d /tmp/latentevo-slurm.XXXXXX)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
echo "== work directory: $work"

if [[ -z "${LATENTEVO_BIN:-}" ]]; then
  LATENTEVO_BIN="$repo/target/debug/latentevo"
  if [[ ! -x "$LATENTEVO_BIN" ]]; then
    echo "== building latentevo"
    cargo build --quiet
  fi
fi
export LATENTEVO_BIN

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  echo "== installing slurm-wlm and munge from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
echo "== $(slurmctld -V), munge $(munged -V 2>&1 | head -1 | awk '{print $2}')"

started=()
cleanup() {
  set +e
  echo "== stopping the daemons"
  for pidfile in "$work/slurmd.pid" "$work/slurmctld.pid"; do
    [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null
  done
  for p in "${started[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
}
trap cleanup EXIT

# MUNGE: a key, a socket directory, the daemon (as the munge user).
if ! pgrep -x munged >/dev/null; then
  if [[ ! -s /etc/munge/munge.key ]]; then
    (command -v mungekey >/dev/null && mungekey --create --force) ||
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  sleep 1
  started+=("$(cat /run/munge/munged.pid)")
  echo "== started munged (pid ${started[-1]})"
fi
munge -n | unmunge >/dev/null && echo "== munge works"

host="$(hostname -s)"
node="$(slurmd -C | head -1)"
mkdir -p "$work/state" "$work/spool" "$work/logs"
cat >"$work/slurm.conf" <<CONF
ClusterName=latentevo-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
$node State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$work/slurm.conf"
echo "== slurm.conf: $node"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  if sinfo -h -o '%t' 2>/dev/null | grep -qx idle; then break; fi
  sleep 1
done
sinfo

# The fixture eval: 3 prompts x (diffevo, best-of-n at 2 temperatures) = 9 items.
cat >"$work/prompts.jsonl" <<'JSONL'
{"id": "brick", "prompt": "Give me three unusual uses for a brick."}
{"id": "canteen", "prompt": "Ways to reduce food waste in a school canteen."}
{"id": "nouns", "prompt": "Write 10 nouns, as unrelated as possible.", "reward": "dat + 0.1*fluency"}
JSONL
export EVAL_OUT="$work/results"
export EVAL_ARGS="--prompts $work/prompts.jsonl --methods 'diffevo,best-of-n' --temperatures 0.5,1.0 \
  --budget 4 --population 2 --top-k 2 --max-new-tokens 5 --bootstrap 500 \
  --model $repo/models/tiny/qwen3_moe --embedder $repo/models/tiny/minilm"

jid="$(sbatch --parsable --array=0-2 --chdir="$repo" --output="$work/logs/shard-%A_%a.out" \
  --export=ALL scripts/slurm/eval-array.sbatch)"
mid="$(sbatch --parsable --dependency=afterok:"$jid" --chdir="$repo" --output="$work/logs/merge-%j.out" \
  --export=ALL scripts/slurm/eval-array.sbatch merge --bootstrap 500)"
echo "== submitted array job $jid (3 shards) and merge job $mid (afterok:$jid)"
squeue
for i in $(seq 600); do
  if [[ -z "$(squeue -h -j "$jid,$mid" 2>/dev/null)" ]]; then break; fi
  sleep 1
done
if [[ -n "$(squeue -h -j "$jid,$mid" 2>/dev/null)" ]]; then
  echo "jobs still queued after 10 minutes" >&2
  squeue
  exit 1
fi
for f in "$work"/logs/*.out; do
  echo "---- $(basename "$f")"
  cat "$f"
done
if [[ ! -s "$EVAL_OUT/merged/results.jsonl" ]]; then
  echo "FAIL: the merge job wrote no results" >&2
  tail -20 "$work/slurmctld.log" "$work/slurmd.log" >&2
  exit 1
fi

echo "== the same eval unsharded, outside Slurm"
eval "set -- $EVAL_ARGS"
"$LATENTEVO_BIN" eval "$@" --out "$work/whole" >/dev/null 2>"$work/logs/whole.err"

python3 - "$EVAL_OUT/merged" "$work/whole" <<'PY'
import json, sys
merged, whole = sys.argv[1], sys.argv[2]
def lines(d):
    out = []
    for l in open(f"{d}/results.jsonl"):
        r = json.loads(l)
        r.pop("timing")
        out.append(r)
    return out
def summary(d):
    s = json.load(open(f"{d}/summary.json"))
    for g in s["groups"]:
        g.pop("seconds")
    return s
a, b = lines(merged), lines(whole)
print(f"merged: {len(a)} lines, unsharded: {len(b)} lines")
ok = a == b and summary(merged) == summary(whole)
for x, y in zip(a, b):
    if x != y:
        print("first differing item:", x["set"], x["prompt_id"], x["method"])
        break
print("merged == unsharded (lines without timing, summary.json without seconds):", ok)
sys.exit(0 if ok else 1)
PY
echo "== summary of the merged run"
sed -n '1,/^### The K ideas/p' "$EVAL_OUT/merged/summary.md" | head -30
echo "PASS"
