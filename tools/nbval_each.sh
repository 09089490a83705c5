#!/usr/bin/env bash
# Runs nbval (strict: stored outputs must reproduce) on each chapter notebook in turn and prints
# each chapter's time; fails at the end if any chapter failed. Usage: tools/nbval_each.sh PY NB...
set -uo pipefail
py=$1; shift
failed=()
for nb in "$@"; do
    start=$(date +%s%N)
    if "$py" -m pytest -q -p no:cacheprovider --nbval --nbval-current-env \
            --nbval-sanitize-with tests/nbval_sanitize.cfg "$nb" > /tmp/nbval.$$.log 2>&1; then
        status=passed
    else
        status=FAILED; failed+=("$nb"); cat /tmp/nbval.$$.log
    fi
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    printf 'nbval %-32s %-7s %4d.%01d s\n' "$nb" "$status" $((ms / 1000)) $((ms % 1000 / 100))
done
rm -f /tmp/nbval.$$.log
if [ ${#failed[@]} -gt 0 ]; then
    echo "nbval failed on: ${failed[*]}"; exit 1
fi
echo "nbval: ${#} notebooks passed"
