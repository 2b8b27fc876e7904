#!/usr/bin/env bash
# Runs one of the kit's programs for a make recipe and, when it fails, ends with one line naming
# the program's own exit code and what it means: make itself exits 2 for any failed recipe,
# whatever the program returned (run directly, the program returns its code itself).
#   infra/explain-exit.sh [--code-1 'WHAT EXIT 1 MEANS'] PROGRAM [ARGS...]
set -u
meaning_of_1="it failed: see the lines above"
if [ "${1:-}" = --code-1 ] && [ $# -ge 2 ]; then meaning_of_1=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: $0 [--code-1 'WHAT EXIT 1 MEANS'] PROGRAM [ARGS...]" >&2; exit 2; }
if [ "${2:-}" = -m ] && [ $# -ge 3 ]; then name=$3; else name=$(basename -- "$1"); fi

# The program is this script's child, as it was make's: Ctrl-C reaches it from the terminal
# (the same process group; this script waits on), and a SIGTERM make passes on to its child, this
# script, is passed on to it. Run in the background only so that `wait` can be interrupted to pass
# it on, with the signals and standard input a foreground command has.
if env --default-signal=INT true 2>/dev/null; then
  env --default-signal=INT,QUIT "$@" 0<&0 &
  child=$!
  trap 'kill -TERM "$child" 2>/dev/null' TERM
  trap 'kill -HUP "$child" 2>/dev/null' HUP
  trap : INT QUIT
  while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break  # gone: rc is its status, not a signal's to us
  done
else  # an env without --default-signal (not GNU coreutils): the program in the foreground
  "$@"
  rc=$?
fi
[ "$rc" -eq 0 ] && exit 0

case $rc in
  1) why=$meaning_of_1 ;;
  2) why="refused before anything ran" ;;
  3) why="a regression is flagged (FAIL_ON_REGRESSION=1)" ;;
  130) why="interrupted (SIGINT: Ctrl-C)" ;;
  143) why="stopped (SIGTERM)" ;;
  *) why=$( ((rc > 128)) && echo "killed by SIG$(kill -l $((rc - 128)) 2>/dev/null)") ;;
esac
echo "$name exited $rc${why:+: $why} (make itself exits 2 for any failure)" >&2
exit "$rc"
