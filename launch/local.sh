#!/usr/bin/env bash
# N processes of `python -m experiments.main --distributed` on this machine, talking through
# jax.distributed over localhost: a multi-host job without a cluster (testing, debugging, CI).
#
#   launch/local.sh NUM_PROCESSES [experiments.main flags...]
#   launch/local.sh 2 --cpu_devices=4 --workdir runs/mp \
#       --config experiments/configs/mnist.py:loss=nce+rce,noise=sym,rate=0.8
#
# Process i gets --process_id=i; process 0 hosts the coordinator on a free port. --cpu_devices=K gives
# each process K CPU devices with gloo collectives (a machine without accelerators); without it each
# process sees all local GPUs, so on a multi-GPU box prefer one process per GPU with
# CUDA_VISIBLE_DEVICES set per process, or simply one process. If any process fails, the others are
# stopped and its exit status is returned. PYTHON selects the interpreter (default: python).
set -euo pipefail

if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES [experiments.main flags...]" >&2
  exit 2
fi
num=$1
shift
python=${PYTHON:-python}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

# A free port, chosen by the OS (never a fixed one: parallel jobs would collide).
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 143' INT TERM

for ((i = 0; i < num; i++)); do
  "$python" -m experiments.main --distributed --coordinator_address="127.0.0.1:$port" \
      --num_processes="$num" --process_id="$i" "$@" &
  pids+=($!)
done

# Wait for all; the first failure stops the rest (they would otherwise block in a collective).
for ((i = 0; i < num; i++)); do
  status=0
  wait -n || status=$?
  if [[ $status -ne 0 ]]; then
    echo "$0: a process exited with status $status; stopping the others." >&2
    exit "$status"
  fi
done
pids=()
