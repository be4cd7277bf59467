#!/usr/bin/env bash
# Installs the real peers the tests start (Debian 12 packages): nginx, Apache
# httpd, lighttpd, php-fpm, php-cgi, spawn-fcgi, libfcgi (cgi-fcgi and the C
# library), fcgiwrap, Perl FCGI, gcc, wrk, systemd (systemd-socket-activate and
# systemd-analyze) and logrotate (for the deployment tests and docs/deploy.md).
# Needs root (or sudo). Does nothing
# for packages already installed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(
  nginx-light apache2 lighttpd
  php-fpm php-cgi
  spawn-fcgi libfcgi-bin libfcgi-dev fcgiwrap libfcgi-perl
  gcc libc6-dev make perl wrk procps passwd systemd logrotate
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
# The tests start each peer themselves on loopback: keep the packages' own
# services from being started at install time (and from holding ports).
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${as_root[@]}" chmod 755 /usr/sbin/policy-rc.d
  created_policy=1
fi
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ "$created_policy" -eq 1 ] && "${as_root[@]}" rm -f /usr/sbin/policy-rc.d
for daemon in nginx apache2 lighttpd php8.2-fpm; do "${as_root[@]}" service "$daemon" stop >/dev/null 2>&1 || true; done
exit 0
