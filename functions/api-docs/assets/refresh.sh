#!/bin/sh
# Replaces swagger-ui/ with the files of swagger-ui-dist VERSION from the npm registry and
# records the version in README.md. Usage (from any folder): assets/refresh.sh 5.35.0
set -eu
VERSION="${1:?usage: refresh.sh VERSION (of swagger-ui-dist)}"
cd "$(dirname "$0")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
npm pack --silent --pack-destination "$work" "swagger-ui-dist@$VERSION" >/dev/null
tar -xzf "$work/swagger-ui-dist-$VERSION.tgz" -C "$work"
mkdir -p swagger-ui
for f in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt package.json; do
  cp "$work/package/$f" "swagger-ui/$f"
done
sed -i "s/\`swagger-ui-dist\` [0-9][0-9.]*/\`swagger-ui-dist\` $VERSION/" README.md
echo "swagger-ui/ now holds swagger-ui-dist $VERSION"
