#!/usr/bin/env bash
# Installs the standard tools the interop tests run against (Debian's `age`
# and `minisign`), Debian's `chromium` for the pickup portal's browser tests
# (driven headless by Playwright at /usr/bin/chromium), `jq`, which the API
# examples in docs/ use (the documentation test runs them), and `sqlite3` for
# the backup and restore commands of docs/operations.md, when they are
# missing. Needs root or sudo, as apt does.
set -euo pipefail
missing=()
for tool in age minisign chromium jq sqlite3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing from Debian: ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
  echo "error: need root or sudo to install ${missing[*]} (apt-get install ${missing[*]})" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
