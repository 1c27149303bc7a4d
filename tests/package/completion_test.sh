#!/usr/bin/env bash
# Bash completion (tools/completion/): each file sources cleanly, registers its command, and
# completes what it should.
#   completion_test.sh SOURCE_DIR BIN_DIR     (BIN_DIR holds bitsd, bitsctl, bitsclient)
set -euo pipefail
src=$1
bin=$2
command -v bash >/dev/null || { echo "no bash"; exit 77; }
# complete WORDS...: what the completion function offers for the last word, one per line.
script='
set -u
PATH="'"$bin"':$PATH"
for f in "'"$src"'"/tools/completion/bitsd "'"$src"'"/tools/completion/bitsctl "'"$src"'"/tools/completion/bitsclient; do
  source "$f" || { echo "FAIL: sourcing $f"; exit 1; }
done
fails=0
expect() {  # want, words...
  local want=$1; shift
  COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=()
  local fn; fn=$(complete -p "$1" | sed -E "s/.*-F ([^ ]+).*/\1/")
  "$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]:-}"
  if printf "%s\n" "${COMPREPLY[@]}" | grep -qx -- "$want"; then echo "ok: $* -> $want"
  else echo "FAIL: $* offers [${COMPREPLY[*]}], not $want"; fails=$((fails+1)); fi
}
for c in bitsd bitsctl bitsclient; do
  complete -p "$c" >/dev/null 2>&1 && echo "ok: complete -p $c" || { echo "FAIL: no completion for $c"; fails=$((fails+1)); }
done
expect --max-sessions bitsd --max-se
expect --max-sessions-per-user bitsd --max-se
expect --users-file bitsd --users
expect debug bitsd --log-level d
expect journal bitsctl jo
expect verify bitsctl journal v
expect add bitsctl user a
expect --replace bitsctl user add alice --rep
expect --state bitsctl sessions --st
expect upload bitsclient up
expect --fragment-size bitsclient upload f http://x/ --frag
expect --chaos bitsclient bench http://x/ --ch
exit $fails
'
bash -c "$script"
