#!/bin/sh
# Health checker scale benchmark (make bench): 1,000 regions at a 1 s
# interval for 30 s on one replica with an embedded NATS. Extra flags are
# passed through, e.g. ./bench/run.sh -regions 2000 -duration 60s
set -eu
cd "$(dirname "$0")/.."
exec go run ./bench "$@"
