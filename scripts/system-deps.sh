# Sourced by run.sh / test.sh: install the Debian programs a command needs when they are missing.
# Usage: source scripts/system-deps.sh PROGRAM:PACKAGE ...
zoo_system_deps() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${need[*]}" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
      > /tmp/zoo-apt.log 2>&1 || { tail -n 20 /tmp/zoo-apt.log >&2; echo "apt-get failed" >&2; return 1; }
  else
    echo "missing programs (install as root with apt-get): ${need[*]}" >&2
  fi
}
zoo_system_deps "$@"
