#!/bin/bash
# The dask-jobqueue way, from a login node: `mosaic run` starts the scheduler here and submits
# the workers as SLURM jobs itself (cluster kind slurm), and cancels them when the run ends.
# Run it inside tmux/screen (the scheduler lives as long as this command) or as a small job.
#
#   bash deploy/slurm/run-jobqueue.sh field.yaml
#
# The cluster settings come from the field config's `cluster:` section, e.g.
#   cluster: {kind: slurm, cores: 32, memory: 240GB, processes: 4, walltime: "06:00:00",
#             lifetime: 340m, lifetime_stagger: 10m, account: YOUR_ACCOUNT, queue: YOUR_PARTITION,
#             interface: ib0, local_directory: $TMPDIR, maximum_jobs: 8}
# or, for every run, from ~/.config/dask/mosaic.yaml (see deploy/dask-mosaic.yaml) together with
# dask-jobqueue's own ~/.config/dask/jobqueue.yaml (see deploy/jobqueue.yaml).
set -euo pipefail
config=${1:?usage: run-jobqueue.sh FIELD.yaml}

mosaic cluster info --config "$config"   # the job script that will be submitted
exec mosaic --log-file "mosaic-$(date +%Y%m%dT%H%M%S).log" run "$config"
