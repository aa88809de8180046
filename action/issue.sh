#!/usr/bin/env bash
# Runs `mbot issue` for the GitHub Action (action.yml, step "issue").
#
# The action's inputs arrive as INPUT_AUTHORITY, INPUT_CA_PIN, INPUT_TOKEN,
# INPUT_ROLES, INPUT_TTL, INPUT_OUT, INPUT_JOIN_METHOD and INPUT_EXPORT_ENV;
# each non-empty one becomes the MBOT_* variable `mbot issue` reads, so an
# empty input leaves a job-level MBOT_* variable (or mbot's default) alone.
# The identity goes to $RUNNER_TEMP/mbot unless out (or MBOT_OUT) says
# otherwise: the runner removes RUNNER_TEMP at the end of the job.
#
# mbot itself masks the OIDC token and writes the step outputs
# (destination-dir, ssh-config, identity-file, certificate-file, known-hosts,
# tls-cert, tls-key, ca-file). With export-env true this script also appends
# MBOT_IDENTITY_DIR=<destination-dir> to GITHUB_ENV for the later steps.
set -euo pipefail

mbot=${MBOT_BIN:-mbot}

from_input() {
	if [[ -n $2 ]]; then
		export "$1=$2"
	fi
}
from_input MBOT_AUTHORITY "${INPUT_AUTHORITY:-}"
from_input MBOT_CA_PIN "${INPUT_CA_PIN:-}"
from_input MBOT_TOKEN "${INPUT_TOKEN:-}"
from_input MBOT_ROLES "${INPUT_ROLES:-}"
from_input MBOT_TTL "${INPUT_TTL:-}"
from_input MBOT_JOIN_METHOD "${INPUT_JOIN_METHOD:-}"
from_input MBOT_OUT "${INPUT_OUT:-}"
if [[ -z ${MBOT_OUT:-} && -n ${RUNNER_TEMP:-} ]]; then
	export MBOT_OUT=$RUNNER_TEMP/mbot
fi
# Keys inside the checkout end up in `actions/upload-artifact` with path: .,
# in caches, in `git add -A` and in docker build contexts: say so.
if [[ -n ${MBOT_OUT:-} && -n ${GITHUB_WORKSPACE:-} ]]; then
	out_abs=$MBOT_OUT
	[[ $out_abs == /* ]] || out_abs=$PWD/$out_abs
	if [[ $out_abs == "$GITHUB_WORKSPACE" || $out_abs == "$GITHUB_WORKSPACE"/* ]]; then
		echo "::warning title=mbot::out ($MBOT_OUT) is inside the repository checkout, where artifacts, caches, git add and container builds can pick up the private keys; leave out unset (\$RUNNER_TEMP/mbot) or choose a directory outside \$GITHUB_WORKSPACE"
	fi
fi

"$mbot" issue

export_env=${INPUT_EXPORT_ENV:-true}
if [[ $export_env == true || $export_env == True || $export_env == TRUE ]]; then
	[[ -n ${GITHUB_ENV:-} ]] || {
		echo "mbot issue: export-env is true but GITHUB_ENV is not set" >&2
		exit 1
	}
	dir=
	if [[ -n ${GITHUB_OUTPUT:-} && -f $GITHUB_OUTPUT ]]; then
		dir=$(sed -n 's/^destination-dir=//p' "$GITHUB_OUTPUT" | tail -n 1)
	fi
	[[ -n $dir ]] || {
		echo "mbot issue: mbot wrote no destination-dir step output (is GITHUB_ACTIONS=true?)" >&2
		exit 1
	}
	echo "MBOT_IDENTITY_DIR=$dir" >>"$GITHUB_ENV"
fi
