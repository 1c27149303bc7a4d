#!/usr/bin/env bash
# bitsctl's command line (issue 19): --help on stdout with exit 0 for bitsctl and every command; a
# usage mistake on stderr with exit 2; `user add` for an existing user refuses without --replace when
# not on a terminal (and asks on one); the users file is created 0640 (group bitsd when that group
# exists) and keeps its mode when rewritten.
#   bitsctl_cli_test.sh BITSCTL
set -euo pipefail
bitsctl=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() {  # description, then a command that must succeed
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}

# --- --help --------------------------------------------------------------------------------------
for cmd in "" "sessions" "journal" "journal dump" "journal verify" "journal compact" "gen-cert" \
           "user" "user add" "user del" "user list"; do
  # shellcheck disable=SC2086
  rc=0; "$bitsctl" $cmd --help >"$tmp/out" 2>"$tmp/err" || rc=$?
  check "bitsctl $cmd --help exits 0" test "$rc" -eq 0
  check "bitsctl $cmd --help writes to stdout" grep -q "^usage: bitsctl ${cmd%% *}" "$tmp/out"
  check "bitsctl $cmd --help writes nothing to stderr" test ! -s "$tmp/err"
done
"$bitsctl" user add --help >"$tmp/out"
check "user add --help documents --replace" grep -q -- "--replace" "$tmp/out"
"$bitsctl" journal verify --help >"$tmp/out"
check "journal verify --help is about verify" grep -q "Exit 0" "$tmp/out"
rc=0; "$bitsctl" >"$tmp/out" 2>"$tmp/err" || rc=$?
check "bitsctl alone is a usage mistake (exit 2)" test "$rc" -eq 2
check "bitsctl alone prints the usage on stderr" grep -q "^usage:" "$tmp/err"

# --- user add for an existing user ----------------------------------------------------------------
users="$tmp/users"
echo "first" | "$bitsctl" user add alice --users-file "$users" --iterations 1000 --password-stdin >/dev/null
check "a new users file has mode 0640" test "$(stat -c %a "$users")" = 640
if getent group bitsd >/dev/null; then
  check "a new users file has group bitsd" test "$(stat -c %G "$users")" = bitsd
fi
before=$(cat "$users")
rc=0; echo "second" | "$bitsctl" user add alice --users-file "$users" --iterations 1000 --password-stdin \
  >"$tmp/out" 2>"$tmp/err" || rc=$?
check "add of an existing user without --replace exits 2" test "$rc" -eq 2
check "... and says why" grep -q "alice exists.*--replace" "$tmp/err"
check "... and leaves the file as it was" test "$before" = "$(cat "$users")"
chmod 0600 "$users"
rc=0; echo "second" | "$bitsctl" user add alice --users-file "$users" --iterations 1000 --password-stdin \
  --replace >"$tmp/out" 2>"$tmp/err" || rc=$?
check "add --replace of an existing user exits 0" test "$rc" -eq 0
check "... says it changed the password" grep -q "changed the password of alice" "$tmp/out"
check "... and changed the line" test "$before" != "$(cat "$users")"
check "a rewritten users file keeps its mode (0600)" test "$(stat -c %a "$users")" = 600
echo "pw" | "$bitsctl" user add bob --users-file "$users" --iterations 1000 --password-stdin >/dev/null
check "adding another user keeps the mode too" test "$(stat -c %a "$users")" = 600

# On a terminal (script(1) gives it one): a question, and "n" changes nothing.
if command -v script >/dev/null; then
  before=$(cat "$users")
  printf 'n\n' | script -qec "'$bitsctl' user add alice --users-file '$users' --iterations 1000" /dev/null \
    >"$tmp/tty" 2>&1 || true
  check "on a terminal it asks before replacing" grep -q "replace the password? \[y/N\]" "$tmp/tty"
  check "... and 'n' changes nothing" test "$before" = "$(cat "$users")"
fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
