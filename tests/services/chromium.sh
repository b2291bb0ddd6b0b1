#!/usr/bin/env bash
# Debian's Chromium for the headless-browser test of the HTML report: prints the browser's path
# on its last line, installing the package where it is missing (as root, with apt-get), or
# exits 1 with one line saying why it cannot.
set -u
for name in chromium chromium-browser; do
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; exit 0; fi
done
if [ "$(id -u)" != 0 ]; then echo "no chromium here, and installing it needs root (apt-get install chromium)"; exit 1; fi
if ! command -v apt-get >/dev/null 2>&1; then echo "no chromium here, and no apt-get to install it"; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends chromium >/tmp/rdbench-chromium-apt.log 2>&1; then
  apt-get update >>/tmp/rdbench-chromium-apt.log 2>&1
  apt-get install -y --no-install-recommends chromium >>/tmp/rdbench-chromium-apt.log 2>&1 \
    || { echo "apt-get install chromium failed (see /tmp/rdbench-chromium-apt.log)"; exit 1; }
fi
command -v chromium
