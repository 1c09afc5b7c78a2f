#!/usr/bin/env bash
# Checks both unit files with `systemd-analyze verify`. The units name the
# installed binaries (/usr/bin/shoal-*); the check runs on copies that
# point at the binaries in BIN_DIR (default target/release), so it works
# before anything is installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin_dir="$(cd "${1:-target/release}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for unit in shoal-controlplane.service shoal-dataplane.service; do
    sed "s#/usr/bin/shoal-#$bin_dir/shoal-#g" "$here/$unit" > "$work/$unit"
done
cd "$work"
# verify prints warnings and exits non-zero on errors; treat any output
# about our units as a failure too, so a typo in a directive is caught.
out="$(systemd-analyze verify ./shoal-controlplane.service ./shoal-dataplane.service 2>&1)" || {
    printf '%s\n' "$out" >&2
    exit 1
}
if printf '%s\n' "$out" | grep -E 'shoal-(control|data)plane\.service' >&2; then
    echo "systemd-analyze verify reported problems in the units (above)" >&2
    exit 1
fi
echo "ok: both units verify"
