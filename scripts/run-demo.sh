#!/usr/bin/env bash
# The main job: several worker processes sharing sessions, then an invariant check.
# Extra arguments go to `offload-registry simulate` (see --help).
source "$(dirname "$0")/_bootstrap.sh"
exec offload-registry simulate "$@"
