#!/usr/bin/env bash
# Vendors GOV.UK Frontend (npm `govuk-frontend`, MIT) into transfer/web/static/govuk/,
# so that serving the web app needs no Node: fetches the pinned version from npm with
# the Sass compiler, compiles its stylesheet with our settings (a system font stack,
# no GDS Transport @font-face, no crown or crest image: those are for GOV.UK services
# only), copies the compiled JavaScript module and writes the licence and the version.
#
#   scripts/update-govuk-frontend.sh            # the pinned version below
#   scripts/update-govuk-frontend.sh 6.3.0      # another one (keep govuk-frontend-jinja
#                                               # in pyproject.toml on the matching release)
#
# Needs npm (Debian's `npm`). Check the result with `git diff --stat` and the web tests.
set -euo pipefail
VERSION="${1:-6.3.0}"
SASS_VERSION="1.108.2"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="$root/transfer/web/static/govuk"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null || { echo "error: npm is needed (apt-get install npm)" >&2; exit 1; }
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --ignore-scripts --save-exact \
  "govuk-frontend@$VERSION" "sass@$SASS_VERSION" >/dev/null
dist="$work/node_modules/govuk-frontend/dist"
got="$(node -p "require('./node_modules/govuk-frontend/package.json').version")"
[[ "$got" == "$VERSION" ]] || { echo "error: npm gave govuk-frontend $got, not $VERSION" >&2; exit 1; }

mkdir -p "$out"
rm -f "$out"/*
"$work/node_modules/.bin/sass" --no-source-map --style=compressed \
  --load-path="$dist" --load-path="$here/govuk" \
  "$here/govuk/handover-govuk.scss" "$out/govuk-frontend.min.css"
# The module ends with a source-map comment naming a file we do not ship.
sed 's|//# sourceMappingURL=.*$||' "$dist/govuk/govuk-frontend.min.js" > "$out/govuk-frontend.min.js"
cp "$here/govuk/LICENSE.txt" "$out/LICENSE.txt"
printf '%s\n' "$VERSION" > "$out/VERSION"

# Nothing may point at a file we do not ship (fonts, images).
if grep -o 'url([^)]*)' "$out/govuk-frontend.min.css" | grep -v 'url(data:' ; then
  echo "error: the compiled stylesheet still refers to files (above)" >&2; exit 1
fi
if grep -q 'GDS Transport' "$out/govuk-frontend.min.css"; then
  echo "error: the compiled stylesheet still names GDS Transport" >&2; exit 1
fi
echo "GOV.UK Frontend $VERSION vendored in ${out#"$root"/}:"
ls -l "$out"
