#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kubectl and helm from the Go module proxy
# into a cache keyed by the hash of this folder's go.mod/go.sum files, so only the first build on a
# machine pays. Prints the bin directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${SPACESECRETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spacesecrets}/controlplane
key=$(cd "$here" && cat */go.mod */go.sum build.sh | sha256sum | cut -c1-16)
out="$cache_root/$key"
if [[ -x "$out/bin/kube-apiserver" && -x "$out/bin/etcd" && -x "$out/bin/kubectl" && -x "$out/bin/helm" \
      && -x "$out/bin/kube-controller-manager" ]]; then
  echo "$out/bin"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [[ -x "$out/bin/helm" ]]; then echo "$out/bin"; exit 0; fi  # another build finished meanwhile

kube_version=$(cd "$here/kube" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
helm_version=$(cd "$here/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v3)
major=${kube_version#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kflags=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  kflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
start=$SECONDS
echo "building the control plane ($kube_version) into $out; the first build takes a while" >&2
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/etcd" .)
(cd "$here/kube" && go build -trimpath -ldflags "-s -w $kflags" -o "$tmp/bin/" ./cmd/...)
(cd "$here/helm" && go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" \
  -o "$tmp/bin/helm" helm.sh/helm/v3/cmd/helm)
echo "control plane built in $((SECONDS - start)) s" >&2
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out/bin"
