# shellcheck shell=bash
# apt_get ARGS...: apt-get as root (through sudo when not root) that waits while another
# program holds apt's or dpkg's lock (a second install, or unattended-upgrades right after a
# Raspberry Pi's first boot) instead of failing at once. It waits up to IOAGENT_APT_WAIT
# seconds (default 300), saying so, then gives up with apt's own message.
# APT_GET names the apt-get to run and IOAGENT_APT_POLL the seconds between tries (tests).

apt_lock_message='Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock the administration directory'

apt_get() {
  local sudo=() waited=0 limit="${IOAGENT_APT_WAIT:-300}" pause="${IOAGENT_APT_POLL:-5}"
  local log status
  if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
  log="$(mktemp)"
  while true; do
    status=0
    "${sudo[@]}" "${APT_GET:-apt-get}" "$@" 2>"$log" || status=$?
    if [ "$status" = 0 ] || ! grep -Eq "$apt_lock_message" "$log"; then
      cat "$log" >&2
      rm -f "$log"
      return "$status"
    fi
    if [ "$waited" -ge "$limit" ]; then
      cat "$log" >&2
      rm -f "$log"
      echo "apt was still busy after $limit s; run this again once it has finished" >&2
      return "$status"
    fi
    if [ "$waited" = 0 ]; then
      echo "==> apt is busy (another install, or automatic updates); waiting for it, up to $limit s" >&2
    fi
    sleep "$pause"
    waited=$((waited + pause))
  done
}
