#!/usr/bin/env bash
# The runner worker's fence tests as an unprivileged user (the suite itself runs as root in CI).
# Needs root (to make the user) and a system Python 3.11+ with venv. Usage, from the checkout:
#   sudo bash bench/unprivileged.sh [pytest args...]
# Makes user `arxuser` (once), copies the working tree to its home, installs arx in a venv of
# its own (no torch: the fence tests do not train), and runs the fence and sandbox tests there.
set -euo pipefail
cd "$(dirname "$0")/.."
user=${ARX_TEST_USER:-arxuser}
python=${ARX_TEST_PYTHON:-/usr/bin/python3}
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)
rm -rf "$home/arx" && mkdir -p "$home/arx"
(git ls-files; git ls-files --others --exclude-standard) | tar -cf - -T - | tar -xf - -C "$home/arx"
chown -R "$user:" "$home/arx"
su "$user" -c "cd ~/arx && { [ -x ~/venv/bin/python ] || $python -m venv ~/venv; } \
  && ~/venv/bin/pip install -q -e '.[dev]' && id && ~/venv/bin/python -m pytest -q \
  -p no:cacheprovider tests/core/levels/test_fence.py tests/cli/test_sandbox.py ${*:-}"
