#!/usr/bin/env bash
# Run by `npm test` first: the integration tests need a real memcached. Installs Debian's package
# when it is missing and this user may install packages; otherwise says how, and the tests that
# need it fail with the same message (or use testcontainers where a Docker engine answers).
set -euo pipefail
if command -v memcached >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-memcached: memcached is not installed and there is no apt-get; install memcached to run the integration tests" >&2
  exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "ensure-memcached: memcached is not installed; run: sudo apt-get install -y memcached" >&2
  exit 0
fi
echo "ensure-memcached: installing Debian's memcached package for the integration tests..."
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq memcached >/dev/null
# The package may start a system memcached on 11211; the tests start their own on free ports.
echo "ensure-memcached: $(memcached -V)"
