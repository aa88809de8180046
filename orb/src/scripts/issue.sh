#!/usr/bin/env bash
# Step "mbot issue" of the mbot/issue command. Each non-empty parameter
# becomes the MBOT_* variable mbot reads; mbot finds the job's
# CIRCLE_OIDC_TOKEN_V2 itself. Later steps get MBOT_IDENTITY_DIR through BASH_ENV.
# Without an out parameter (or MBOT_OUT) the identity goes to a new private
# directory under $TMPDIR or /tmp, outside the checkout, so that
# store_artifacts, save_cache and persist_to_workspace of the project never
# pick up its keys.
set -euo pipefail

from_param() {
	if [[ -n $2 ]]; then
		export "$1=$2"
	fi
}
from_param MBOT_AUTHORITY "${MBOT_PARAM_AUTHORITY:-}"
from_param MBOT_CA_PIN "${MBOT_PARAM_CA_PIN:-}"
from_param MBOT_TOKEN "${MBOT_PARAM_TOKEN:-}"
from_param MBOT_ROLES "${MBOT_PARAM_ROLES:-}"
from_param MBOT_OUT "${MBOT_PARAM_OUT:-}"
from_param MBOT_TTL "${MBOT_PARAM_TTL:-}"
export MBOT_JOIN_METHOD=circleci
if [[ -z ${MBOT_OUT:-} ]]; then
	MBOT_OUT=$(mktemp -d)/mbot
	export MBOT_OUT
fi

mbot issue

dir=$(cd "$MBOT_OUT" && pwd -P)
if [[ -n ${BASH_ENV:-} ]]; then
	printf 'export MBOT_IDENTITY_DIR=%q\n' "$dir" >>"$BASH_ENV"
fi
