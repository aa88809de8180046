#!/usr/bin/env bash
# Step "Install mbot" of the mbot/issue command: uses the binary that
# mbot-path (or MBOT_BINARY) names, keeps an mbot on PATH, or downloads the
# release archive for this machine, checks its SHA-256 against the release's
# checksums.txt and puts the binary on PATH through BASH_ENV.
#   MBOT_PARAM_MBOT_PATH  an mbot binary already in the job (parameter mbot-path)
#   MBOT_BINARY           the same, from the project or a context
#   MBOT_PARAM_VERSION    latest or a tag (v1.2.3)
#   MBOT_RELEASES_URL     releases base (default https://github.com/mbot-dev/mbot/releases)
set -euo pipefail

fail() {
	echo "mbot: $*" >&2
	exit 1
}

dir=${MBOT_INSTALL_DIR:-$HOME/.mbot/bin}

# on_path puts $dir on the PATH of the later steps.
on_path() {
	if [[ -n ${BASH_ENV:-} ]]; then
		# shellcheck disable=SC2016 # $PATH is expanded by the later steps' shells
		printf 'export PATH=%q:"$PATH"\n' "$dir" >>"$BASH_ENV"
	fi
}

binary=${MBOT_PARAM_MBOT_PATH:-${MBOT_BINARY:-}}
if [[ -n $binary ]]; then
	[[ $binary == /* ]] || binary=$PWD/$binary
	[[ -f $binary && -x $binary ]] || fail "mbot-path: $binary is not an executable file in this job"
	mkdir -p "$dir"
	ln -sf "$binary" "$dir/mbot"
	on_path
	echo "mbot: using $binary (mbot-path; $("$binary" --version | head -n 1))"
	exit 0
fi

if command -v mbot >/dev/null 2>&1; then
	echo "mbot: using $(command -v mbot) ($(mbot --version | head -n 1))"
	exit 0
fi

releases=${MBOT_RELEASES_URL:-https://github.com/mbot-dev/mbot/releases}
releases=${releases%/}
case $(uname -s) in
Linux) os=linux ;;
Darwin) os=darwin ;;
*) fail "no mbot release for $(uname -s); use an image with mbot on PATH" ;;
esac
case $(uname -m) in
x86_64 | amd64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*) fail "no mbot release for $(uname -m)" ;;
esac
version=${MBOT_PARAM_VERSION:-latest}
if [[ $version == latest ]]; then
	from=$releases/latest/download
else
	from=$releases/download/v${version#v}
fi

fetch() {
	if command -v curl >/dev/null 2>&1; then
		curl --fail --silent --show-error --location --retry 3 --output "$1" "$2"
	else
		wget -q -O "$1" "$2"
	fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rc=0
fetch "$work/checksums.txt" "$from/checksums.txt" || rc=$?
# curl --fail exits 22 and wget 8 when the server answers with an error (404).
if ((rc == 22 || rc == 8)); then
	fail "mbot has no release '$version' at $releases ($from/checksums.txt is not there): until it has, use an image with mbot on PATH or set the mbot-path parameter to a binary built with go build"
elif ((rc != 0)); then
	fail "cannot download $from/checksums.txt"
fi
asset=$(awk -v want="_${os}_${arch}.tar.gz" '$2 ~ /^mbot_/ && substr($2, length($2) - length(want) + 1) == want { print $2; exit }' "$work/checksums.txt")
[[ -n $asset ]] || fail "checksums.txt from $from lists no $os $arch archive"
tag=v${asset#mbot_}
tag=${tag%%_*}
fetch "$work/$asset" "$releases/download/$tag/$asset" || fail "cannot download $asset"
expected=$(awk -v f="$asset" '$2 == f { print $1; exit }' "$work/checksums.txt")
if command -v sha256sum >/dev/null 2>&1; then
	actual=$(sha256sum "$work/$asset" | cut -d' ' -f1)
else
	actual=$(shasum -a 256 "$work/$asset" | cut -d' ' -f1)
fi
if [[ $actual != "$expected" ]]; then
	fail "checksum mismatch for $asset: checksums.txt of $tag says sha256 $expected, the download has $actual; refusing to install it"
fi
tar -xzf "$work/$asset" -C "$work" mbot
mkdir -p "$dir"
mv -f "$work/mbot" "$dir/mbot"
chmod 0755 "$dir/mbot"
on_path
echo "mbot: installed $asset (sha256 $actual verified) as $dir/mbot"
