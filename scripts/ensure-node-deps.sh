#!/bin/sh
# Installs the npm packages the e2e service tests run for real
# (prerender-node, rendertron-middleware, express) into a cached directory
# when they are missing, and prints that directory. The directory is $1,
# else $PRISM_NODE_DEPS, else ~/.cache/prism/node-deps. Versions are pinned
# so that a run tests what the README says was tested.
set -e
dir=${1:-${PRISM_NODE_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/prism/node-deps}}
pkgs="prerender-node@3.8.3 rendertron-middleware@0.1.5 express@5.3.0"
have=1
for p in $pkgs; do
	name=${p%@*}
	ver=${p##*@}
	if ! grep -qs "\"version\": \"$ver\"" "$dir/node_modules/$name/package.json"; then
		have=0
	fi
done
if [ "$have" = 0 ]; then
	if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
		echo "ensure-node-deps: installing Debian's nodejs and npm packages" >&2
		if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
		export DEBIAN_FRONTEND=noninteractive
		$SUDO apt-get update -qq >&2
		$SUDO apt-get install -y -qq --no-install-recommends nodejs npm >&2
	fi
	mkdir -p "$dir"
	# shellcheck disable=SC2086
	npm install --prefix "$dir" --no-audit --no-fund --loglevel=error $pkgs >&2
fi
echo "$dir"
