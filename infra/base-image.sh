#!/usr/bin/env bash
# Builds a stand-in for Beam's Python SDK base image from Debian, for machines that cannot pull
# docker.io/apache/beam_python<X.Y>_sdk (no registry access): debootstrap's bookworm minbase with
# Debian's Python, a venv at /usr/local (so, as in Beam's image, /usr/local/bin/python and
# /usr/local/lib/pythonX.Y/site-packages), the pinned apache-beam and a stand-in for
# /opt/apache/beam/boot (infra/containers/beam-boot-standin.py says what it does and leaves out).
# Usage: infra/base-image.sh TAG [--force]   (needs root, buildah and debootstrap)
# Env: BEAM_VERSION, PY_MINOR (required), DEBIAN_MIRROR (default: this machine's apt mirror),
# CA_BUNDLE (the host's CA bundle, bind-mounted into the pip step, never baked).
set -euo pipefail
tag=${1:?usage: infra/base-image.sh TAG [--force]}
force=${2:-}
: "${BEAM_VERSION:?}" "${PY_MINOR:?}"
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
here=$(cd "$(dirname "$0")" && pwd)

# The recipe's own hash (this script and the boot stand-in) is a label: an image built from an
# older recipe is rebuilt, not reused.
recipe=$(cat "$0" "$here/containers/beam-boot-standin.py" | sha256sum | cut -c1-16)
built=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "io.beam-bench.standin-recipe"}}' "$tag" 2>/dev/null || true)
if [ "$force" != --force ] && [ "$built" = "$recipe" ]; then
  echo "base image $tag exists (FORCE=1 rebuilds it)"; exit 0
fi
[ -z "$built" ] || echo "base image $tag was built from another recipe: rebuilding"
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing: make image-tools installs it" >&2; exit 2; }
done
if [ -z "${DEBIAN_MIRROR:-}" ]; then
  DEBIAN_MIRROR=$(sed -nE 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+bookworm[[:space:]].*/\2/p' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1 || true)
fi
: "${DEBIAN_MIRROR:?no Debian mirror found in /etc/apt: set DEBIAN_MIRROR}"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/beam-base.XXXXXX")
ctr=
cleanup() { [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
echo "debootstrap bookworm from $DEBIAN_MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/rootfs" "$DEBIAN_MIRROR" \
  > "$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
have=$(chroot "$work/rootfs" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$have" = "$PY_MINOR" ] || { echo "error: bookworm's Python is $have, the images use $PY_MINOR" >&2; exit 2; }
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*

ctr=$(buildah from scratch)
buildah copy --quiet "$ctr" "$work/rootfs" /
buildah copy --quiet --chmod 0755 "$ctr" "$here/containers/beam-boot-standin.py" /opt/apache/beam/boot
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The venv at /usr/local gives the python/pip commands; the host CA bundle is mounted (pip's own
# bundle is replaced by the system one through PIP_CERT for this step only).
buildah run --isolation chroot -v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" \
  --env PATH="$path" --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$ctr" -- sh -euc "
    python$PY_MINOR -m venv /usr/local
    pip install --no-cache-dir --disable-pip-version-check -q --upgrade pip
    pip install --no-cache-dir --disable-pip-version-check -q apache-beam==$BEAM_VERSION
    python -c 'import apache_beam, sys; assert apache_beam.__version__ == \"$BEAM_VERSION\"; print(sys.executable, apache_beam.__file__)'"
buildah config --env PATH="$path" --env LANG=C.UTF-8 --workingdir / \
  --entrypoint '["/opt/apache/beam/boot"]' --cmd '' \
  --label io.beam-bench.standin-recipe="$recipe" --label io.beam-bench.standin-for="docker.io/apache/beam_python${PY_MINOR}_sdk:$BEAM_VERSION" "$ctr"
buildah commit --quiet --rm "$ctr" "$tag" >/dev/null
ctr=
echo "built $tag"
