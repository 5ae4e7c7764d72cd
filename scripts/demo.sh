#!/usr/bin/env bash
# make demo: runs Strata's main job end to end on local files.
# For now that is the foundation: coroutines in IOThreads and the main loop
# doing work in thread pools and sharing state under a CoMutex.
set -euo pipefail
B=${STRATA_BUILD:-build}
echo "== strata-demo: coroutines, IOThreads, thread pools, CoMutex"
"$B/strata-demo"
