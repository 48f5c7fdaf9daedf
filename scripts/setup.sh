#!/usr/bin/env bash
# Installs what the tests need and is not yet here; safe to run again.
#   - rustfmt and clippy
#   - .venv with grpcurl and grpcio (interop tests) and the deploy linters
#     (hadolint, cfn-lint, shellcheck, botocore), from tests/interop/requirements.txt
#   - docker-compose (Debian's, to validate docker-compose.yml; no engine needed)
#   - valgrind (scripts/count-instructions.sh counts the broker's instructions)
#   - PostgreSQL server binaries, only when no server answers on 127.0.0.1:5432
#     and none are installed (the tests then start a private cluster)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    log "installing ${component}"
    rustup component add "${component}"
  fi
done

requirements=tests/interop/requirements.txt
stamp=.venv/.requirements-installed
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if [ ! -f "${stamp}" ] || ! cmp -s "${requirements}" "${stamp}"; then
  log "installing Python packages from ${requirements}"
  .venv/bin/pip install --quiet --disable-pip-version-check -r "${requirements}"
  cp "${requirements}" "${stamp}"
fi

# apt_tool COMMAND PACKAGE WHY: installs PACKAGE when COMMAND is missing.
apt_tool() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing $2 (apt-get install $2)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1 || {
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
    }
  else
    log "$2 is missing ($3): install it"
    exit 1
  fi
}
apt_tool docker-compose docker-compose "needed by scripts/check-deploy.sh"
apt_tool valgrind valgrind "needed by scripts/count-instructions.sh"

postgres_answers() {
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
}
have_initdb() {
  command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
if [ -z "${TEST_DATABASE_URL:-}" ] && ! postgres_answers && ! have_initdb; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing PostgreSQL server binaries (apt-get install postgresql)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  else
    log "no PostgreSQL: install it (initdb on PATH) or set TEST_DATABASE_URL=postgres://USER@HOST:PORT/postgres"
    exit 1
  fi
fi
