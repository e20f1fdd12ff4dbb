#!/usr/bin/env bash
# The criterion benchmarks of the hot paths (decode, slot, route, frame, encode), compared with the
# baseline checked in under benches/criterion-baseline/, so that a change that slows a hot path
# shows in review as criterion's "Performance has regressed" line with the percentage.
#
#   bash benches/hot_paths.sh          run and compare with the checked-in baseline
#   bash benches/hot_paths.sh route    only the benches whose names match "route"
#   SAVE=1 bash benches/hot_paths.sh   run, and make this run the checked-in baseline
#                                      (commit benches/criterion-baseline/ with the figures in
#                                      benches/RESULTS.md)
#
# Criterion keeps baselines under target/criterion/<bench>/<name>/; this script copies the
# checked-in estimates there as the baseline "checked-in" before comparing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

checked_in=benches/criterion-baseline
criterion_dir=${CARGO_TARGET_DIR:-target}/criterion

if [[ "${SAVE:-0}" == 1 ]]; then
    cargo bench --bench hot_paths -- --save-baseline checked-in
    rm -rf "$checked_in"
    # A bench in a group sits one level deeper (decode/set_pipeline_16/checked-in).
    while IFS= read -r dir; do
        bench=${dir#"$criterion_dir"/}
        bench=${bench%/checked-in}
        mkdir -p "$checked_in/$bench"
        # estimates.json and benchmark.json are what a comparison reads; sample.json keeps the
        # raw samples for criterion's significance test.
        cp "$dir"/{estimates,benchmark,sample,tukey}.json "$checked_in/$bench/"
    done < <(find "$criterion_dir" -type d -name checked-in)
    echo "saved the baseline of $(git rev-parse --short HEAD) in $checked_in"
    exit 0
fi

[[ -d "$checked_in" ]] || { echo "no baseline in $checked_in: run SAVE=1 bash $0" >&2; exit 1; }
while IFS= read -r estimates; do
    dir=$(dirname "$estimates")
    bench=${dir#"$checked_in"/}
    mkdir -p "$criterion_dir/$bench/checked-in"
    cp "$dir"/*.json "$criterion_dir/$bench/checked-in/"
done < <(find "$checked_in" -name estimates.json)
# Lenient: a bench added since the baseline was saved runs without a comparison instead of
# failing the run. Arguments filter the benches (a regex), as criterion's own do.
cargo bench --bench hot_paths -- --baseline-lenient checked-in "$@"
