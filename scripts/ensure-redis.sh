#!/bin/sh
# Installs Debian's redis-server when it is missing: the cluster e2e tests
# start their own on a free loopback port (the package's service is not
# used).
set -e
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
echo "ensure-redis: installing Debian's redis-server package" >&2
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package may start its own server on 6379; the tests do not need it.
if command -v service >/dev/null 2>&1; then $SUDO service redis-server stop >/dev/null 2>&1 || true; fi
