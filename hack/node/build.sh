#!/usr/bin/env bash
# Builds what a local test node runs -- kubelet and kube-scheduler (from the same k8s.io/kubernetes
# module as the control plane), containerd v2 (containerd, containerd-shim-runc-v2, ctr), a static
# pause binary and a static busybox for the test image -- into a cache keyed by the hash of this
# folder's go.mod/go.sum files, pause.c and this script, so only the first build on a machine pays.
# runc and the CNI plugins come from Debian (see the Makefile's kubenode target).
# Prints the bin directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${SPACESECRETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spacesecrets}/node
key=$(cd "$here" && cat */go.mod */go.sum pause.c build.sh | sha256sum | cut -c1-16)
out="$cache_root/$key"
want=(kubelet kube-scheduler containerd containerd-shim-runc-v2 ctr pause busybox)
complete() {
  local b
  for b in "${want[@]}"; do [[ -x "$out/bin/$b" ]] || return 1; done
}
if complete; then echo "$out/bin"; exit 0; fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if complete; then echo "$out/bin"; exit 0; fi  # another build finished meanwhile

kube_version=$(cd "$here/kube" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
ctrd_version=$(cd "$here/containerd" && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
major=${kube_version#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kflags=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  kflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
cflags="-X github.com/containerd/containerd/v2/version.Version=${ctrd_version#v}"
cflags+=" -X github.com/containerd/containerd/v2/version.Revision=module-proxy"
ctags="no_btrfs no_devmapper no_zfs"

tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
start=$SECONDS
echo "building the node (kubelet $kube_version, containerd $ctrd_version) into $out; the first build takes a while" >&2
(cd "$here/kube" && go build -trimpath -ldflags "-s -w $kflags" -o "$tmp/bin/" ./cmd/...)
echo "kubelet and kube-scheduler built after $((SECONDS - start)) s" >&2
(cd "$here/containerd" && go build -trimpath -tags "$ctags" -ldflags "-s -w $cflags" -o "$tmp/bin/" \
  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr)
(cd "$here/containerd" && go build -trimpath -tags "$ctags no_grpc" -ldflags "-s -w $cflags" -o "$tmp/bin/" \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2)
echo "containerd built after $((SECONDS - start)) s" >&2
gcc -static -Os -s -o "$tmp/bin/pause" "$here/pause.c"
# busybox for the test image: Debian's static build, unpacked (not installed) from its package.
(cd "$tmp" && apt-get -o APT::Sandbox::User=root download busybox-static >/dev/null && dpkg-deb -x busybox-static_*.deb deb \
  && cp deb/bin/busybox bin/busybox && rm -rf deb busybox-static_*.deb)
echo "node built in $((SECONDS - start)) s" >&2
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out/bin"
