#!/usr/bin/env bash
# Installs mbot for the GitHub Action (action.yml, step "install").
#
#   INPUT_VERSION     "latest" (default), a release tag (v1.2.3 or 1.2.3), or
#                     "path" / empty: use the mbot already on PATH.
#   INPUT_MBOT_PATH   an mbot binary already on the runner (input mbot-path;
#                     else the environment variable MBOT_BINARY): used as it
#                     is, nothing is downloaded, version is not looked at.
#   MBOT_RELEASES_URL where releases live (default
#                     https://github.com/mbot-dev/mbot/releases): the tag of the
#                     latest one is where "$MBOT_RELEASES_URL/latest" redirects,
#                     and assets are at "$MBOT_RELEASES_URL/download/<tag>/<file>".
#   RUNNER_OS, RUNNER_ARCH, RUNNER_TEMP, GITHUB_PATH, GITHUB_OUTPUT: set by the runner.
#
# An mbot on PATH whose `mbot --version` is the wanted version is used as it
# is. Otherwise the goreleaser archive mbot_<version>_<os>_<arch>.tar.gz (.zip
# on Windows) is downloaded, its SHA-256 checked against the release's
# checksums.txt (a mismatch stops the job), and the binary put in
# $RUNNER_TEMP/mbot-<version>/, which is added to GITHUB_PATH.
# Step outputs: mbot (path of the binary) and version.
set -euo pipefail

releases=${MBOT_RELEASES_URL:-https://github.com/mbot-dev/mbot/releases}
releases=${releases%/}

fail() {
	echo "mbot install: $*" >&2
	if [[ ${GITHUB_ACTIONS:-} == true ]]; then
		# Workflow commands are one line.
		echo "::error title=mbot install::${*//$'\n'/ }"
	fi
	exit 1
}

output() {
	if [[ -n ${GITHUB_OUTPUT:-} ]]; then
		echo "$1=$2" >>"$GITHUB_OUTPUT"
	fi
}

# native prints a path as the runner's OS writes it (Windows paths under Git Bash).
native() {
	if command -v cygpath >/dev/null 2>&1; then
		cygpath -w "$1"
	else
		printf '%s\n' "$1"
	fi
}

# installed_version prints the version an mbot binary reports ("dev" for a
# source build), or nothing if it does not run.
installed_version() {
	local line
	line=$("$1" --version 2>/dev/null | head -n1) || return 0
	# "mbot version 1.2.3 (commit abc1234, built 2026-01-02T03:04:05Z)"
	line=${line#*version }
	printf '%s\n' "${line%% *}"
}

use() {
	echo "mbot install: using $1 ($("$1" --version 2>/dev/null | head -n1))" >&2
	output mbot "$(native "$1")"
	output version "$2"
}

sha256() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d' ' -f1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 "$1" | cut -d' ' -f1
	elif command -v openssl >/dev/null 2>&1; then
		openssl dgst -sha256 -r "$1" | cut -d' ' -f1
	else
		fail "none of sha256sum, shasum or openssl is installed: cannot verify the download"
	fi
}

want=${INPUT_VERSION:-}
want=${want//[[:space:]]/}
on_path=$(command -v mbot 2>/dev/null || true)

binary=${INPUT_MBOT_PATH:-${MBOT_BINARY:-}}
if [[ -n $binary ]]; then
	[[ -f $binary && -x $binary ]] || fail "mbot-path: $binary is not an executable file on this runner"
	"$binary" --version >/dev/null 2>&1 || fail "mbot-path: $binary does not run ('$binary --version' failed)"
	use "$binary" "$(installed_version "$binary")"
	exit 0
fi

# no_release is the advice when the release asked for does not exist.
no_release="until mbot has that release, build mbot on the runner (go build -o \"\$RUNNER_TEMP/mbot\" . in a checkout of mbot) and pass it as mbot-path, or set version: to a tag listed at $releases"

if [[ -z $want || $want == path ]]; then
	[[ -n $on_path ]] || fail "version: '${want}' means the mbot on PATH, but there is none; install mbot in an earlier step or set version: latest"
	use "$on_path" "$(installed_version "$on_path")"
	exit 0
fi

command -v curl >/dev/null 2>&1 || fail "curl is needed to download mbot"
curl_opts=(--fail --silent --show-error --location --retry 3 --connect-timeout 20)

# status prints the HTTP status of a HEAD request to $1 after redirects
# (000: no answer).
status() {
	curl --silent --location --retry 3 --connect-timeout 20 --head --output /dev/null --write-out '%{http_code}' "$1" || true
}

if [[ $want == latest ]]; then
	# The releases page redirects .../latest to .../tag/<latest tag>; with
	# no release yet there is no tag to lead to.
	answer=$(curl --silent --show-error --location --retry 3 --connect-timeout 20 --head --output /dev/null --write-out '%{http_code} %{url_effective}' "$releases/latest") ||
		fail "cannot reach $releases/latest to find the latest mbot release"
	effective=${answer#* }
	tag=${effective##*/}
	if [[ ${answer%% *} == 404 || $effective != */tag/* || -z $tag ]]; then
		fail "mbot has no release at $releases yet ($releases/latest leads to no release tag): $no_release"
	fi
else
	tag=v${want#v}
fi
version=${tag#v}

if [[ -n $on_path && $(installed_version "$on_path") == "$version" ]]; then
	use "$on_path" "$version"
	exit 0
fi

case ${RUNNER_OS:-} in
Linux) os=linux ;;
macOS) os=darwin ;;
Windows) os=windows ;;
*) fail "no mbot release for RUNNER_OS='${RUNNER_OS:-}' (Linux, macOS and Windows have one)" ;;
esac
case ${RUNNER_ARCH:-} in
X64) arch=amd64 ;;
ARM64) arch=arm64 ;;
*) fail "no mbot release for RUNNER_ARCH='${RUNNER_ARCH:-}' (X64 and ARM64 have one)" ;;
esac
ext=tar.gz exe=mbot
if [[ $os == windows ]]; then
	ext=zip exe=mbot.exe
fi
asset=mbot_${version}_${os}_${arch}.${ext}

[[ -n ${RUNNER_TEMP:-} ]] || fail "RUNNER_TEMP is not set"
dest=$RUNNER_TEMP/mbot-$version
if [[ -x $dest/$exe && $(installed_version "$dest/$exe") == "$version" ]]; then
	echo "mbot install: $dest/$exe is already installed" >&2
else
	work=$(mktemp -d "$RUNNER_TEMP/mbot-download.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	base=$releases/download/$tag
	echo "mbot install: downloading $base/$asset" >&2
	if ! curl "${curl_opts[@]}" --output "$work/$asset" "$base/$asset"; then
		if [[ $(status "$releases/tag/$tag") == 404 ]]; then
			fail "mbot release $tag does not exist at $releases: $no_release"
		fi
		fail "cannot download $base/$asset (release $tag has no archive for $os $arch, or the download failed)"
	fi
	curl "${curl_opts[@]}" --output "$work/checksums.txt" "$base/checksums.txt" ||
		fail "cannot download $base/checksums.txt: refusing to install an archive that cannot be verified"

	expected=$(awk -v f="$asset" '$2 == f || $2 == "*" f { print $1; exit }' "$work/checksums.txt")
	[[ -n $expected ]] || fail "checksums.txt of $tag has no line for $asset: refusing to install it"
	actual=$(sha256 "$work/$asset")
	# Both are lowercase hex (sha256sum, goreleaser); no bash 4 needed (macOS).
	if [[ $actual != "$expected" ]]; then
		fail "checksum mismatch for $asset: checksums.txt of $tag says sha256 $expected, the download has $actual; refusing to install it"
	fi
	echo "mbot install: $asset: sha256 $actual matches checksums.txt" >&2

	mkdir -p "$work/x"
	if [[ $ext == zip ]]; then
		if command -v unzip >/dev/null 2>&1; then
			unzip -q -o "$work/$asset" -d "$work/x"
		elif command -v 7z >/dev/null 2>&1; then
			7z x -y -o"$work/x" "$work/$asset" >/dev/null
		else
			fail "neither unzip nor 7z is installed: cannot extract $asset"
		fi
	else
		tar -xzf "$work/$asset" -C "$work/x"
	fi
	[[ -f $work/x/$exe ]] || fail "$asset has no $exe at its root"
	mkdir -p "$dest"
	mv -f "$work/x/$exe" "$dest/$exe"
	chmod 0755 "$dest/$exe"
	"$dest/$exe" --version >/dev/null || fail "the downloaded $exe does not run on this runner ($RUNNER_OS $RUNNER_ARCH)"
fi

if [[ -n ${GITHUB_PATH:-} ]]; then
	native "$dest" >>"$GITHUB_PATH"
fi
use "$dest/$exe" "$version"
