#!/usr/bin/env bash
# A Cloud TPU VM pod slice: the same `python -m experiments.main --distributed` on every worker
# (gcloud ... ssh --worker=all). jax.distributed.initialize() finds the coordinator, the process count
# and this worker's id from the TPU metadata; each worker drives its local TPU chips.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh --workdir /mnt/shared/runs/c10 \
#       --config experiments/configs/cifar10.py:loss=nce+rce,noise=sym,rate=0.8
#
# Needs the repository at $REMOTE_DIR (default: ~/aplx) with aplx installed on every worker, and a
# --workdir on storage every worker sees (a Filestore NFS or gcsfuse mount at the same path: orbax
# checkpoints are written by all workers together). docs/launch.md has the setup commands.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
remote_dir=${REMOTE_DIR:-aplx}  # Relative to the remote home directory.
python=${PYTHON:-python3}

# Quote every flag for the remote shell.
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"} \
    --worker=all --command="cd $(printf '%q' "$remote_dir") && $python -m experiments.main --distributed $(printf '%q ' "$@")"
