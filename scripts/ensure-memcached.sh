#!/usr/bin/env bash
# Run by `npm test` first: the integration tests need a real memcached, one of them runs
# libmemcached's memccapable (Debian's libmemcached-tools) against a controller, the wall-clock
# tests step controllers' clocks with libfaketime (Debian's libfaketime), and the login test runs
# a pymemcache client (Debian's python3-pymemcache, under the system python), and the status page
# test drives a headless Chromium (Debian's chromium, through playwright-core), and the benchmark's
# etcd target runs a three-member etcd (Debian's etcd-server). Installs the
# Debian packages that are missing when this user may install packages; otherwise says how, and
# the tests that need them fail with the same message (or use testcontainers for memcached where
# a Docker engine answers).
set -euo pipefail
missing=()
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
command -v memccapable >/dev/null 2>&1 || missing+=(libmemcached-tools)
compgen -G '/usr/lib/*/faketime/libfaketimeMT.so.1' >/dev/null || compgen -G '/usr/lib/faketime/libfaketimeMT.so.1' >/dev/null || missing+=(libfaketime)
/usr/bin/python3 -c 'import pymemcache' >/dev/null 2>&1 || missing+=(python3-pymemcache)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-memcached: ${missing[*]} not installed and there is no apt-get; install them to run the integration tests" >&2
  exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "ensure-memcached: ${missing[*]} not installed; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 0
fi
echo "ensure-memcached: installing Debian's ${missing[*]} for the integration tests..."
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
# The memcached and etcd-server packages may start a system memcached on 11211 and etcd on 2379-2380;
# the tests and the benchmark start their own on free ports.
echo "ensure-memcached: $(memcached -V)"
