#!/bin/sh
# Builds Mosquitto's hashed password file from secrets/mqtt-users/: one file per user, named
# after the user, holding that user's password on one line. docker-compose.yml runs it as the
# one-shot service mosquitto-init before every start of the broker. Passwords never appear on a
# command line (they go through a temporary file that mosquitto_passwd -U hashes in place).
#
# It also makes the "healthcheck" user, with a random password kept on the auth volume, and the
# mosquitto_sub options file the broker's healthcheck logs in with.
set -eu

users_dir="${MQTT_USERS_DIR:-/run/mqtt-users}"
auth_dir="${MQTT_AUTH_DIR:-/mosquitto/auth}"

fail() {
    echo "init-passwd: $*" >&2
    exit 1
}

umask 077
mkdir -p "$auth_dir/client"
plain="$auth_dir/passwd.new"
rm -f "$plain"
: >"$plain"

count=0
for file in "$users_dir"/*; do
    [ -f "$file" ] || continue
    user=$(basename "$file")
    case "$user" in
        .* | *.example | *.md) continue ;;
        healthcheck) fail "$file: the user name healthcheck is reserved" ;;
        *[!A-Za-z0-9_.-]*) fail "$file: a user name may only use letters, digits and _ . -" ;;
    esac
    # Trimmed like ioagent trims IOAGENT_MQTT__PASSWORD_FILE, so both sides agree.
    password=$(head -n 1 "$file" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
    [ -n "$password" ] || fail "$file is empty: put $user's password in it"
    printf '%s:%s\n' "$user" "$password" >>"$plain"
    count=$((count + 1))
done
[ "$count" -gt 0 ] || fail "no users in $users_dir: create secrets/mqtt-users/ioagent (docs/docker.md)"

# Kept across runs: a broker that is still running must keep accepting the healthcheck.
healthcheck_password_file="$auth_dir/healthcheck.password"
if [ ! -s "$healthcheck_password_file" ]; then
    od -An -N 24 -tx1 /dev/urandom | tr -d ' \n' >"$healthcheck_password_file"
fi
healthcheck_password=$(cat "$healthcheck_password_file")
printf 'healthcheck:%s\n' "$healthcheck_password" >>"$plain"
printf -- '-h 127.0.0.1\n-u healthcheck\n-P %s\n' "$healthcheck_password" >"$auth_dir/client/mosquitto_sub"

mosquitto_passwd -U "$plain"
mv -f "$plain" "$auth_dir/passwd"
# The broker reads the file after dropping root for its own user.
if id mosquitto >/dev/null 2>&1; then
    chown -R mosquitto:mosquitto "$auth_dir"
fi
echo "init-passwd: wrote the password file for $count user(s) and the healthcheck"
