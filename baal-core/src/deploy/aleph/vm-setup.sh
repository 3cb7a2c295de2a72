#!/bin/sh
# Baal's VM-side steps, shipped by the Aleph deployer and run as root over SSH:
#   vm-setup.sh prepare         Caddy, the agent's user, directories (what a warm pool VM has)
#   vm-setup.sh install SHA256  move the staged binary (checked against SHA256), settings, unit and
#                               Caddyfile into place, keeping the previous binary and settings
#   vm-setup.sh start           restart the agent and reload Caddy
#   vm-setup.sh health          wait until the agent answers GET /health on loopback
#   vm-setup.sh rollback        put the previous binary and settings back
#
# Every path hangs off BAAL_ROOT (empty on a VM) so tests can point it at a directory, and every
# system tool is looked up on PATH so tests can put stand-ins for systemctl and apt-get first.
# Only a real VM exercises: apt-get installing Caddy, useradd, systemd running the hardened unit,
# and Caddy obtaining a certificate.
#
# No value a user typed ever appears in this script or on a command line: the settings file is
# written by the deployer and streamed over SSH stdin.
set -eu

ROOT="${BAAL_ROOT:-}"
AGENT_USER="${BAAL_AGENT_USER:-baal-agent}"
PORT="${BAAL_AGENT_PORT:-8080}"
HEALTH_SECONDS="${BAAL_HEALTH_SECONDS:-60}"
OPT="$ROOT/opt/baal"
INCOMING="$OPT/incoming"
ETC="$ROOT/etc/baal"
DATA="$ROOT/var/lib/baal-agent"
UNITS="$ROOT/etc/systemd/system"
CADDY="$ROOT/etc/caddy"

fail() { echo "$*" >&2; exit 1; }

prepare() {
    if ! command -v caddy >/dev/null 2>&1; then
        # Ubuntu 24.04 and Debian 12 both carry Caddy in their archives.
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || fail "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq caddy >/dev/null || fail "installing Caddy failed"
    fi
    if ! getent passwd "$AGENT_USER" >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/baal-agent --no-create-home --shell /usr/sbin/nologin "$AGENT_USER" \
            || fail "creating the user $AGENT_USER failed"
    fi
    mkdir -p "$OPT" "$INCOMING" "$ETC" "$DATA/workspace" "$UNITS" "$CADDY"
    chmod 700 "$ETC" "$INCOMING"
    chown -R "$AGENT_USER:" "$DATA"
    chmod 750 "$DATA"
}

install_agent() {
    expected="$1"
    [ -f "$INCOMING/baal-agent" ] || fail "no staged binary"
    actual="$(sha256sum "$INCOMING/baal-agent" | cut -d' ' -f1)"
    [ "$actual" = "$expected" ] || fail "the uploaded binary is corrupt (sha256 $actual, expected $expected)"
    chmod 755 "$INCOMING/baal-agent"
    if [ -f "$OPT/baal-agent" ]; then cp -p "$OPT/baal-agent" "$OPT/baal-agent.prev"; fi
    if [ -f "$ETC/agent.env" ]; then cp -p "$ETC/agent.env" "$ETC/agent.env.prev"; fi
    # Renames within one directory tree are atomic: a crash leaves the old or the new file.
    mv -f "$INCOMING/baal-agent" "$OPT/baal-agent"
    # Root-only: systemd (root) reads it and hands the agent its environment.
    if [ "$(id -u)" = 0 ]; then chown root: "$INCOMING/agent.env"; fi
    chmod 600 "$INCOMING/agent.env"
    mv -f "$INCOMING/agent.env" "$ETC/agent.env"
    chmod 644 "$INCOMING/baal-agent.service"
    mv -f "$INCOMING/baal-agent.service" "$UNITS/baal-agent.service"
    if [ -f "$INCOMING/Caddyfile" ]; then
        chmod 644 "$INCOMING/Caddyfile"
        mv -f "$INCOMING/Caddyfile" "$CADDY/Caddyfile"
    fi
    chown -R "$AGENT_USER:" "$DATA"
    systemctl daemon-reload
    systemctl enable baal-agent caddy >/dev/null 2>&1 || systemctl enable baal-agent
}

start() {
    # restart, not start: a running agent must pick up the new binary and settings.
    systemctl restart baal-agent || fail "systemctl restart baal-agent failed"
    systemctl reload-or-restart caddy || fail "Caddy did not (re)start"
}

health() {
    # Four checks a second: an agent usually answers well under a second after its start.
    i=0
    while [ "$i" -lt "$((HEALTH_SECONDS * 4))" ]; do
        if curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null; then
            return 0
        fi
        i=$((i + 1))
        sleep 0.25
    done
    fail "the agent did not answer its health check on port $PORT"
}

rollback() {
    [ -f "$OPT/baal-agent.prev" ] || fail "no previous version to roll back to"
    mv -f "$OPT/baal-agent.prev" "$OPT/baal-agent"
    if [ -f "$ETC/agent.env.prev" ]; then mv -f "$ETC/agent.env.prev" "$ETC/agent.env"; fi
    systemctl restart baal-agent || fail "systemctl restart baal-agent failed"
}

case "${1:-}" in
    prepare) prepare ;;
    install) install_agent "${2:?sha256}" ;;
    start) start ;;
    health) health ;;
    rollback) rollback ;;
    *) fail "usage: vm-setup.sh prepare|install SHA256|start|health|rollback" ;;
esac
