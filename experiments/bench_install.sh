#!/usr/bin/env bash
# What `pip install jaxprune` costs: install time, site-packages size, package count and
# `import jaxprune` time in a fresh virtual environment, for the package alone and with the
# [experiments] extra (TFDS + matplotlib: what the base install pulled before they became
# extras). Writes experiments/results/bench/install.md. Needs the package registry.
#   bash experiments/bench_install.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$repo" archive HEAD | tar -x -C "$work" --one-top-level=src
out="$repo/experiments/results/bench/install.md"
rows=""
for variant in base experiments; do
  python -m venv "$work/v_$variant"
  py="$work/v_$variant/bin/python"
  "$py" -m pip install -q --upgrade pip > /dev/null
  target="$work/src"; name=jaxprune
  if [ "$variant" = experiments ]; then target="$work/src[experiments]"; name="jaxprune[experiments]"; fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date +%s.%N)
  "$py" -m pip install -q --no-cache-dir "$target" > /dev/null
  install_s=$(echo "$(date +%s.%N) - $start" | bc)
  site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  size=$(du -sm "$site" | cut -f1)
  count=$("$py" -m pip list --format=freeze 2>/dev/null | wc -l)
  imports=""
  for _ in 1 2 3; do
    start=$(date +%s.%N)
    (cd "$work" && "$py" -c "import jaxprune")
    imports="$imports $(echo "$(date +%s.%N) - $start" | bc)"
  done
  best=$(echo $imports | tr ' ' '\n' | sort -n | head -1)
  rows="$rows| \`pip install $name\` | $(printf %.1f "$install_s") | $size | $count | $(printf %.2f "$best") | $load |"$'\n'
done
cat > "$out" <<MD
# Install cost (\`bash experiments/bench_install.sh\`)

A fresh virtual environment per row (Python $(python -c 'import platform; print(platform.python_version())'), pip without its cache, wheels from the
package registry); \`import jaxprune\`: best of 3 fresh processes. The \`[experiments]\` row is what
the base install pulled before TFDS and matplotlib became extras. $(nproc) CPUs; load: 1-minute load
average when the install started.

| install | time [s] | site-packages [MiB] | packages | \`import jaxprune\` [s] | load |
|---|---:|---:|---:|---:|---:|
$rows
MD
cat "$out"
