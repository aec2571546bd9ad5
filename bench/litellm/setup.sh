#!/usr/bin/env bash
# Install the pinned LiteLLM proxy baseline into its own virtualenv.
#
#   bench/litellm/setup.sh VENV_DIR
#
# Creates VENV_DIR if it is missing, installs requirements.txt into it (quietly),
# and prints the absolute path of the `litellm` executable on stdout (the only
# thing printed on stdout; progress goes to stderr). A stamp file inside the venv
# records the sha256 of requirements.txt, so a re-run with an unchanged file is
# instant. PYTHON (default python3) selects the interpreter for a new venv.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
python="${PYTHON:-python3}"
venv="$1"
mkdir -p "$(dirname "$venv")"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
stamp="$venv/.bench-litellm-requirements.sha256"
litellm_bin="$venv/bin/litellm"

want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ -x "$litellm_bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$litellm_bin"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "litellm: creating virtualenv $venv" >&2
    "$python" -m venv "$venv"
fi

echo "litellm: installing $(grep -E '^litellm==' "$req") into $venv (about a minute, ~750 MB)" >&2
rm -f "$stamp"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" >&2

if [[ ! -x "$litellm_bin" ]]; then
    echo "litellm: install finished but $litellm_bin is missing" >&2
    exit 1
fi
echo "$want" >"$stamp"
echo "$litellm_bin"
