#!/usr/bin/env bash
# Run the Dask Clusters UI tests in Chromium against a real `jupyter lab`.
# Works on a fresh Debian machine: installs Chromium and the test's npm packages itself.
# Usage: ui-tests/run.sh [playwright args...]
# Exit code = the test result.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  echo "installing chromium (apt)..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi

if ! command -v jupyter >/dev/null || ! jupyter labextension list 2>&1 | grep -q "jupyter-dask-kube.*enabled"; then
  echo "jupyter-dask-kube is not installed: pip install -e .. (builds the lab extension)" >&2
  exit 2
fi

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ ! -d node_modules/@playwright/test ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

mkdir -p ../docs
exec npx playwright test "$@"
