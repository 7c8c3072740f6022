#!/usr/bin/env bash
# Usage: build.sh operator|nodered   -> builds dist/spacesecrets-<image>-<version>.oci.tar
#        build.sh python-deps ROOTFS | python-app ROOTFS SRC   (steps, also run by the Dockerfile)
#
# An image is a Debian root filesystem (rootfs.sh) plus its pinned packages from PyPI or npm, cached
# by the hash of their inputs, plus the project's own files from this tree, packed into one layer
# by spacesecrets.devtools.oci. Needs root (mmdebstrap, chroot). Prints the archive's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python3}
site=usr/local/lib/python3.11/dist-packages

log() { echo "build.sh: $*" >&2; }

# Python's bytecode, checked by source hash rather than mtime: valid whatever the layer's mtimes
# are, and never rewritten on a read-only root.
compile() {  # ROOTFS DIR...
  local rootfs=$1; shift
  chroot "$rootfs" /usr/bin/python3 -m compileall -q --invalidation-mode checked-hash "$@" >/dev/null
}

# pip writes console scripts with the build machine's interpreter in their #!: not in the image
# (it has its own `spacesecrets`), nor in the packages' RECORDs.
strip_scripts() {  # SITE
  rm -rf "$1/bin"
  sed -i '\|^\.\./\.\./bin/|d' "$1"/*.dist-info/RECORD
}

# The operator's Python packages from PyPI, exactly those in requirements.txt (hashes checked), for
# the image's Python; Debian's own bytecode recompiled the same way.
python_deps() {  # ROOTFS
  local rootfs=$1 tmp
  tmp=$(mktemp -d)
  PIP_CONFIG_FILE="$here/operator/pip.conf" "$PYTHON" -m pip install --quiet \
    --disable-pip-version-check --root-user-action=ignore --no-cache-dir --no-compile \
    --no-deps --require-hashes --target "$tmp/site" -r "$here/operator/requirements.txt"
  strip_scripts "$tmp/site"
  mkdir -p "$rootfs/$site"
  cp -a "$tmp/site/." "$rootfs/$site/"
  rm -rf "$tmp"
  find "$rootfs/usr/lib/python3"* "$rootfs/$site" -name __pycache__ -type d -prune -exec rm -rf {} +
  compile "$rootfs" /usr/lib/python3.11 /usr/lib/python3/dist-packages "/$site"
}

# The project itself: a wheel built from SRC (pyproject.toml, README.md, operator/), installed
# without dependencies, and the `spacesecrets` command.
python_app() {  # ROOTFS SRC
  local rootfs=$1 src=$2 tmp
  tmp=$(mktemp -d)
  "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$tmp/wheel" "$src"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --no-compile --no-deps --target "$tmp/site" "$tmp"/wheel/*.whl
  strip_scripts "$tmp/site"
  # where the wheel was built: a temporary path that would make every build differ
  rm "$tmp"/site/*.dist-info/direct_url.json
  sed -i '/direct_url\.json,/d' "$tmp"/site/*.dist-info/RECORD
  cp -a "$tmp/site/." "$rootfs/$site/"
  rm -rf "$tmp"
  printf '%s\n' '#!/usr/bin/python3' 'import sys' '' 'from spacesecrets.cli import main' '' \
    'sys.exit(main())' > "$rootfs/usr/local/bin/spacesecrets"
  chmod 0755 "$rootfs/usr/local/bin/spacesecrets"
  compile "$rootfs" "/$site/spacesecrets"
}

# The Debian root filesystem with the image's registry packages, built once per set of inputs.
base() {  # IMAGE DEPS-INPUT... -> prints the cached rootfs directory
  local image=$1; shift
  local cache key out tmp
  cache=${SPACESECRETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spacesecrets}/image
  key=$(cd "$here" && cat rootfs.sh build.sh sources.list source-date-epoch "$image"/packages \
        "$image"/debian.lock "$@" | sha256sum | cut -c1-16)
  out="$cache/$image-$key"
  mkdir -p "$cache"
  exec 9>"$cache/.lock-$image"
  flock 9
  if [[ ! -d $out ]]; then
    log "building the $image base (Debian + registry packages) into $out"
    tmp=$(mktemp -d "$cache/.build.XXXXXX")
    "$here/rootfs.sh" "$image" "$tmp/rootfs" >"$tmp/rootfs.log" 2>&1 \
      || { cat "$tmp/rootfs.log" >&2; exit 1; }
    "${image}_deps" "$tmp/rootfs" >&2
    mv "$tmp" "$out"
  fi
  exec 9>&-
  echo "$out/rootfs"
}

nodered_deps() {  # ROOTFS: Node-RED from npm, exactly as in package-lock.json
  local app=$1/usr/src/node-red
  install -d "$app"
  cp "$here/nodered/package.json" "$here/nodered/package-lock.json" "$app/"
  (cd "$app" && npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
     --loglevel=error >&2)
  rm -rf "$app/node_modules/.package-lock.json"
}
operator_deps() { python_deps "$@"; }

# Our node, from the tarball `npm pack` makes of clients/node-red, as a user would install it.
nodered_app() {  # ROOTFS TGZ
  local app=$1/usr/src/node-red
  (cd "$app" && npm install --no-save --offline --omit=dev --omit=optional --ignore-scripts \
     --no-audit --no-fund --loglevel=error "$2" >&2)
  rm -rf "$app/node_modules/.package-lock.json"
  ln -sfn /usr/src/node-red/node_modules/node-red/red.js "$1/usr/local/bin/node-red"
  install -d -m 0755 -o 65532 -g 65532 "$1/data"
}

version_of() { "$PYTHON" -c 'import json,sys,tomllib; p=sys.argv[1]; print(tomllib.load(open(p,"rb"))["project"]["version"] if p.endswith(".toml") else json.load(open(p))["version"])' "$1"; }

image() {  # operator|nodered
  local image=$1 base_dir version name out key
  mkdir -p "$root/dist"
  tmp=$(mktemp -d "$root/dist/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  mkdir "$tmp/src"
  if [[ $image == operator ]]; then
    base_dir=$(base operator operator/requirements.txt operator/pip.conf)
    version=$(version_of "$root/pyproject.toml")
    name=ghcr.io/spacesecrets/spacesecrets:$version
    out=$root/dist/spacesecrets-operator-$version.oci.tar
    # the Docker build context: what .dockerignore lets in
    tar -C "$root" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
      --exclude=.mypy_cache --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
      -cf "$tmp/src.tar" pyproject.toml README.md operator
    tar -C "$tmp/src" -xf "$tmp/src.tar"
  else
    base_dir=$(base nodered nodered/package.json nodered/package-lock.json)
    version=$(version_of "$root/clients/node-red/package.json")
    name=ghcr.io/spacesecrets/node-red:$version
    out=$root/dist/spacesecrets-node-red-$version.oci.tar
    (cd "$root/clients/node-red" && npm pack --silent --pack-destination "$tmp/src" >/dev/null)
    cat "$tmp"/src/*.tgz > "$tmp/src.tar"
  fi
  # an archive built from the same base, sources and packer is not built again
  key=$(cat "$tmp/src.tar" "$root/operator/spacesecrets/devtools/oci.py" "$here/$image/image.json" \
        <(echo "$base_dir $name") | sha256sum | cut -c1-16)
  if [[ -f $out && "$(cat "$out.inputs" 2>/dev/null)" == "$key" ]]; then
    log "$out is up to date"
    echo "$out"
    return
  fi
  cp -a "$base_dir" "$tmp/rootfs"
  if [[ $image == operator ]]; then
    python_app "$tmp/rootfs" "$tmp/src"
  else
    nodered_app "$tmp/rootfs" "$tmp"/src/*.tgz
  fi
  log "$image root filesystem: $(du -sm "$tmp/rootfs" | cut -f1) MB"
  "$PYTHON" -m spacesecrets.devtools.oci --rootfs "$tmp/rootfs" --config "$here/$image/image.json" \
    --name "$name" --epoch "$(grep -v "^#" "$here/source-date-epoch")" --out "$tmp/image.oci.tar" >&2
  mv "$tmp/image.oci.tar" "$out"
  echo "$key" > "$out.inputs"
  log "$out: $(du -m "$out" | cut -f1) MB"
  echo "$out"
}

case ${1:-} in
  operator|nodered) image "$1" ;;
  python-deps) python_deps "$2" ;;
  python-app) python_app "$2" "$3" ;;
  *) echo "usage: $0 operator|nodered | python-deps ROOTFS | python-app ROOTFS SRC" >&2; exit 2 ;;
esac
