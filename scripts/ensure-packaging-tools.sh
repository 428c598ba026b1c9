#!/bin/sh
# Installs what the packaging tests use when it is missing: nginx and Caddy
# (the examples are checked with nginx -t and caddy validate, and the
# render-service ones are run on free loopback ports), Debian's snakeoil
# certificate the nginx examples name, and systemd-analyze for the unit.
# The packages' own services are not used.
set -e
pkgs=
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || pkgs="$pkgs nginx-light"
command -v caddy >/dev/null 2>&1 || pkgs="$pkgs caddy"
[ -f /etc/ssl/private/ssl-cert-snakeoil.key ] || pkgs="$pkgs ssl-cert"
command -v systemd-analyze >/dev/null 2>&1 || pkgs="$pkgs systemd"
[ -z "$pkgs" ] && exit 0
echo "ensure-packaging-tools: installing$pkgs" >&2
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
if command -v service >/dev/null 2>&1; then
	$SUDO service nginx stop >/dev/null 2>&1 || true
	$SUDO service caddy stop >/dev/null 2>&1 || true
fi
