#!/usr/bin/env bash
# Step "Install mbot" of the mbot/issue command: keeps an mbot on PATH, or
# downloads the release archive for this machine, checks its SHA-256 against
# the release's checksums.txt and puts the binary on PATH through BASH_ENV.
#   MBOT_PARAM_VERSION  latest or a tag (v1.2.3)
#   MBOT_RELEASES_URL   releases base (default https://github.com/mbot-dev/mbot/releases)
set -euo pipefail

if command -v mbot >/dev/null 2>&1; then
	echo "mbot: using $(command -v mbot) ($(mbot --version | head -n 1))"
	exit 0
fi

fail() {
	echo "mbot: $*" >&2
	exit 1
}

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

dir=${MBOT_INSTALL_DIR:-$HOME/.mbot/bin}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch "$work/checksums.txt" "$from/checksums.txt" || fail "cannot download $from/checksums.txt"
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
if [[ -n ${BASH_ENV:-} ]]; then
	# shellcheck disable=SC2016 # $PATH is expanded by the later steps' shells
	printf 'export PATH=%q:"$PATH"\n' "$dir" >>"$BASH_ENV"
fi
echo "mbot: installed $asset (sha256 $actual verified) as $dir/mbot"
