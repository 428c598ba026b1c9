#!/bin/sh
# Installs Debian's Chromium when no browser is present. PRISM never downloads
# a browser at run time; it uses the system one.
set -e
for b in /usr/lib/chromium/chromium chromium chromium-browser google-chrome; do
	if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
echo "ensure-chromium: installing Debian's chromium package" >&2
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
