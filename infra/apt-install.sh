#!/usr/bin/env bash
# Installs the Debian packages of a list that are not installed yet; with all of them there it is
# one dpkg-query per package and one line. Used by make test-servers and make image-tools, and by
# make test with --if-possible: there, a machine where this cannot install (not root, no sudo
# without a password, apt-get failing) prints nothing more and exits 0, and the tests that need
# what is missing are skipped, named in the test run's last line.
#   infra/apt-install.sh [--if-possible] WHAT PACKAGE...
set -uo pipefail

if_possible=
if [ "${1:-}" = --if-possible ]; then if_possible=1; shift; fi
[ $# -ge 2 ] || { echo "usage: $0 [--if-possible] WHAT PACKAGE..." >&2; exit 2; }
what=$1; shift

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  [ -n "$if_possible" ] && exit 0  # not Debian: the tests name what they skip
  echo "error: $what: installs Debian packages with apt-get, which this machine lacks: $*" >&2
  exit 1
fi

missing=()
for package in "$@"; do
  dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q 'ok installed' \
    || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$what: all installed ($*)"
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif sudo -n true 2>/dev/null; then  # sudo without a password: nothing to ask
  as_root=(sudo -n)
elif [ -n "$if_possible" ]; then
  exit 0  # cannot install here: the tests name what they skip and `make test-servers`
else
  as_root=(sudo)  # asks for the password
fi

echo "$what: installing ${missing[*]}"
apt() { ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
if apt update -q && apt install -y -q --no-install-recommends "${missing[@]}"; then
  exit 0
fi
if [ -n "$if_possible" ]; then
  echo "$what: could not install ${missing[*]} (apt-get failed above): their tests are skipped"
  exit 0
fi
echo "error: $what: could not install ${missing[*]} (apt-get failed above)" >&2
exit 1
