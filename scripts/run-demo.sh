#!/bin/sh
# Starts the bundled demo site on 127.0.0.1:3000 and PRISM in front of it on
# prism.example.toml; Ctrl-C stops both.
set -e
cd "$(dirname "$0")/.."
./bin/demo -listen 127.0.0.1:3000 &
demo=$!
trap 'kill $demo 2>/dev/null; wait $demo 2>/dev/null' EXIT INT TERM
echo "demo site: http://127.0.0.1:3000  -  PRISM: http://localhost:4000"
echo "try: curl -A Googlebot localhost:4000/   (and without -A for the raw page)"
./prism -config prism.example.toml
