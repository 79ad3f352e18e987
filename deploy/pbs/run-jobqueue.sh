#!/bin/bash
# The dask-jobqueue way on PBS, from a login node: `mosaic run` submits the workers with qsub
# (cluster kind pbs) and deletes them at the end. Cluster settings in the field config, e.g.
#   cluster: {kind: pbs, cores: 32, memory: 240GB, processes: 4, walltime: "06:00:00",
#             lifetime: 340m, lifetime_stagger: 10m, account: YOUR_PROJECT, queue: YOUR_QUEUE,
#             resource_spec: "select=1:ncpus=32:mem=240gb", interface: ib0, maximum_jobs: 8}
set -euo pipefail
config=${1:?usage: run-jobqueue.sh FIELD.yaml}
mosaic cluster info --config "$config"
exec mosaic --log-file "mosaic-$(date +%Y%m%dT%H%M%S).log" run "$config"
