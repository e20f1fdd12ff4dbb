#!/usr/bin/env bash
# Prints the predixy configuration the benchmarks run predixy with: one worker thread, reads from
# masters only (as respgate reads by default), no per-request logs, in front of a Redis Cluster.
# Sourced by benches/load.sh and benches/callgrind.sh, so both measure the same predixy.
#
# Usage: predixy_conf NAME BIND_ADDR LOG_FILE SEED...
predixy_conf() {
    local name=$1 bind=$2 log=$3 seed
    shift 3
    echo "Name $name"
    echo "Bind $bind"
    echo "WorkerThreads 1"
    echo "ClientTimeout 0"
    echo "Log $log"
    echo "LogVerbSample 0"
    echo "LogDebugSample 0"
    echo "LogInfoSample 0"
    echo "LogNoticeSample 1"
    echo "LogWarnSample 1"
    echo "LogErrorSample 1"
    echo "ClusterServerPool {"
    echo "    MasterReadPriority 100"
    echo "    StaticSlaveReadPriority 0"
    echo "    DynamicSlaveReadPriority 0"
    echo "    RefreshInterval 1"
    echo "    ServerTimeout 1"
    echo "    ServerFailureLimit 10"
    echo "    ServerRetryTimeout 1"
    echo "    KeepAlive 120"
    echo "    Servers {"
    for seed in "$@"; do echo "        + $seed"; done
    echo "    }"
    echo "}"
}
