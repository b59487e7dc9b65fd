# Sourced by the ensure scripts: installs Debian packages with apt-get, non-interactively, through
# sudo only when not root. The sourcing script defines say() for its messages.

# The prefix that runs a command as root; empty when already root.
as_root=()

# apt_can_install MISSING YOURSELF: set as_root, or stop with a message when apt-get or root
# cannot be had. MISSING says what is missing, YOURSELF what to install instead by hand.
apt_can_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    say "$1 and apt-get is not available; install $2 yourself"
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      say "$1; installing it needs root, and sudo is not available"
      exit 1
    fi
    # -n: never prompt (CI runs without stdin); fail clearly instead.
    as_root=(sudo -n)
  fi
}

# apt_install ARG...: apt-get update, then apt-get install of ARG (packages and options).
apt_install() {
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "$@" >&2
}

# stop_service UNIT: on a machine with systemd, stop and disable a service the package started,
# so that nothing runs that the project did not start.
stop_service() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    "${as_root[@]}" systemctl disable --now "$1" >/dev/null 2>&1 || true
  fi
}
