#!/usr/bin/env sh
# Refresh the vendored front-end libraries from the npm registry, at the pinned versions, with their licenses.
# They are committed so that neither `make run` nor CI needs npm, and the page loads nothing from a CDN.
set -eu
MARKED=18.2.1
DOMPURIFY=3.4.18
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
cd "$tmp"
npm pack --silent "marked@$MARKED" "dompurify@$DOMPURIFY" >/dev/null
for tarball in *.tgz; do mkdir "${tarball%.tgz}" && tar xzf "$tarball" -C "${tarball%.tgz}"; done
cp "marked-$MARKED/package/lib/marked.umd.js" "$here/marked.umd.js"
cp "marked-$MARKED/package/LICENSE" "$here/LICENSE.marked"
cp "dompurify-$DOMPURIFY/package/dist/purify.min.js" "$here/purify.min.js"
cp "dompurify-$DOMPURIFY/package/LICENSE" "$here/LICENSE.dompurify"
rm -rf "$tmp"
echo "marked $MARKED, dompurify $DOMPURIFY vendored into $here"
