#!/usr/bin/env bash
# The man pages the build generates from docs/man/*.scd (scdoc) exist and render without a warning.
#   man_test.sh MAN_DIR      (build/man)
set -euo pipefail
dir=$1
fails=0
for page in bitsd.8 bitsd.conf.5 bitsctl.8 bitsclient.1; do
  f="$dir/$page"
  if [ ! -s "$f" ] || [ ! -s "$f.gz" ]; then
    echo "FAIL: $f or $f.gz missing (is scdoc installed? tools/install-deps)"
    fails=$((fails + 1))
    continue
  fi
  grep -q "^\.TH \"\?${page%.*}\"\? \"\?${page##*.}\"\?" "$f" || { echo "FAIL: $page has no .TH ${page%.*} ${page##*.}"; fails=$((fails + 1)); }
  if command -v groff >/dev/null; then
    warnings=$(groff -man -Tutf8 -ww -z "$f" 2>&1 >/dev/null)
  elif command -v mandoc >/dev/null; then
    warnings=$(mandoc -Tlint -Wwarning "$f" 2>&1 >/dev/null || true)
  else
    echo "no groff or mandoc: cannot render"; exit 77
  fi
  if [ -n "$warnings" ]; then echo "FAIL: $page: $warnings"; fails=$((fails + 1)); else echo "ok: $page renders cleanly"; fi
  cmp -s "$f" <(gzip -dc "$f.gz") || { echo "FAIL: $page.gz is not $page"; fails=$((fails + 1)); }
done
exit $fails
