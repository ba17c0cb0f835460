#!/usr/bin/env bash
# Build the viewer's static files: OpenSeadragon from npm (serve/viewer/package-lock.json, `npm ci`) copied into
# serve/static/vendor/openseadragon/, which creps-serve serves at /static/vendor/ (no CDN at run time). Idempotent.
#   bash serve/build.sh              the vendor files
#   bash serve/build.sh --browser    also Debian's chromium, for tests/serve/test_browser.py
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

case "${1:-}" in
  "") browser=0 ;;
  --browser) browser=1 ;;
  *) echo "build.sh: unknown option ${1} (usage: bash serve/build.sh [--browser])" >&2; exit 2 ;;
esac

if [ "$browser" -eq 1 ] && ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "ok installed"; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
fi

command -v npm > /dev/null || {
  echo "build.sh: npm not found: install it (Debian: sudo apt-get install npm) and run bash serve/build.sh again" >&2
  exit 1
}
(cd "$here/viewer" && npm ci --no-audit --no-fund --loglevel=error)

# Copied into a temp folder renamed at the end, so a failed build never leaves half a vendor folder.
source="$here/viewer/node_modules/openseadragon/build/openseadragon"
vendor="$here/static/vendor"
mkdir -p "$vendor"
rm -rf "$vendor/openseadragon.tmp"
mkdir "$vendor/openseadragon.tmp"
cp "$source/openseadragon.min.js" "$vendor/openseadragon.tmp/"
cp -r "$source/images" "$vendor/openseadragon.tmp/"
rm -rf "$vendor/openseadragon"
mv "$vendor/openseadragon.tmp" "$vendor/openseadragon"
echo "viewer: OpenSeadragon $(cd "$here/viewer" && node -p 'require("openseadragon/package.json").version' 2>/dev/null \
  || echo '?') in $vendor/openseadragon"
