# Shared by scripts/test and scripts/run-node: find Python >= 3.10, create the venv, install the package.
# Sets VENV. Usage: saas_ensure_venv [dev]
saas_find_python() {
  local candidate
  for candidate in "${SAAS_PYTHON:-}" python3.11 python3.12 python3.13 python3.10 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "Python >= 3.10 is required (set SAAS_PYTHON to its path)" >&2
  return 1
}

# libp2p depends on fastecdsa, which builds against libgmp when no wheel fits: install libgmp-dev (apt, when root
# and missing) before any pip install.
saas_ensure_libgmp() {
  command -v dpkg-query >/dev/null 2>&1 || return 0
  dpkg-query -W -f='${Status}' libgmp-dev 2>/dev/null | grep -q "install ok installed" && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing system package: libgmp-dev"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgmp-dev >/dev/null
  else
    echo "warning: libgmp-dev is missing; installing libp2p (fastecdsa) may fail: apt-get install libgmp-dev" >&2
  fi
}

saas_ensure_venv() {
  local extra=${1:-}
  saas_ensure_libgmp
  VENV=${SAAS_VENV:-.venv}
  if [ ! -x "$VENV/bin/python" ]; then
    local python
    python=$(saas_find_python)
    echo "== creating $VENV with $python"
    "$python" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  local spec="."
  [ "$extra" = dev ] && spec=".[dev]"
  # Reinstall only when the dependency list changed (editable install: code changes need nothing).
  local stamp="$VENV/.saas-installed-$extra"
  local digest
  digest=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    echo "== installing saas-middleware${extra:+[$extra]} into $VENV"
    "$VENV/bin/python" -m pip install --quiet -e "$spec"
    echo "$digest" > "$stamp"
  fi
}

# bubblewrap: the sandbox every adapter process runs in (the RTI does not start without it unless told
# --unsafe-no-sandbox). Installed with apt when missing and we are root (scripts/run-node and scripts/test).
saas_ensure_sandbox() {
  command -v bwrap >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing system package: bubblewrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "warning: bubblewrap is missing: the RTI needs it to sandbox adapters (apt-get install bubblewrap)" >&2
  fi
}

# System packages the test suite uses (bubblewrap; a real sshd for credential and SSH-backend tests; munge and
# SLURM for a one-node test cluster; Chromium and its driver for the dashboard's browser tests). Installed with apt when missing and we are root; otherwise the tests that
# need them fail and say what to install.
saas_ensure_system_packages() {
  local missing=()
  command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
  command -v git >/dev/null 2>&1 || missing+=(git)
  [ -x /usr/sbin/munged ] || missing+=(munge)
  { [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && command -v sbatch >/dev/null 2>&1; } || missing+=(slurm-wlm)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: missing system packages (${missing[*]}); install them to run every test" >&2
  fi
}
