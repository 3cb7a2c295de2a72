#!/bin/sh
# Baal's VM-side steps, shipped by the Aleph deployer and run as root over SSH:
#   vm-setup.sh prepare         Caddy, the agent's user, directories (what a warm pool VM has)
#   vm-setup.sh install SHA256  move the staged binary (checked against SHA256), settings, unit and
#                               Caddyfile into place, keeping the previous binary and settings
#   vm-setup.sh start           restart the agent and reload Caddy
#   vm-setup.sh health          wait until the agent answers GET /health on loopback
#   vm-setup.sh rollback        put the previous binary and settings back
#   vm-setup.sh authorize       add the public key line on stdin to root's authorized_keys (once)
#   vm-setup.sh convert         take a Python Baal VM over: stop the Python agent, keep its unit and
#                               Caddyfile aside (*.python), prepare, and copy its workspace and
#                               database into ours; prints "python-agent.db" when that copy exists
#   vm-setup.sh converted       record that Baal's agent took the VM over (after its health check)
#   vm-setup.sh unconvert       stop ours, put the Python unit and Caddyfile back, restart Python
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
# What the Python Baal left on its VMs (never changed here, only copied from).
PYTHON="$ROOT/opt/baal-agent"
PYTHON_DB="$PYTHON/app/agent.db"
PYTHON_WORKSPACE="$PYTHON/workspace"
# Present once Baal's agent took a Python VM over: its files are then ours, not copies to refresh.
CONVERTED="$ETC/converted-from-python"

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

authorize() {
    key="$(cat)"
    case "$key" in
        ""|*"
"*) fail "authorize expects one public key line on stdin" ;;
    esac
    # Type and key data: the comment may differ between two copies of one key.
    data="$(printf '%s\n' "$key" | cut -d' ' -f1-2)"
    mkdir -p "$ROOT/root/.ssh"
    chmod 700 "$ROOT/root/.ssh"
    keys="$ROOT/root/.ssh/authorized_keys"
    touch "$keys"
    chmod 600 "$keys"
    if ! grep -qF -- "$data" "$keys"; then
        # A file without a final line break would glue the key to its last line.
        if [ -n "$(tail -c 1 "$keys")" ]; then echo >> "$keys"; fi
        printf '%s\n' "$key" >> "$keys"
    fi
}

# Copies $1 to $1.python unless a copy is kept already (a second attempt must not keep ours).
keep_aside() {
    if [ -f "$1" ] && [ ! -f "$1.python" ]; then cp -p "$1" "$1.python"; fi
}

# The Python database with its -wal and -shm, copied after the service stopped (nothing writes
# then) to staging names and renamed into place: one consistent copy, never half of one.
copy_python_db() {
    staged="$DATA/python-agent.db.incoming"
    rm -f "$staged" "$staged-wal" "$staged-shm"
    for suffix in "" -wal -shm; do
        if [ -f "$PYTHON_DB$suffix" ]; then cp "$PYTHON_DB$suffix" "$staged$suffix" || fail "copying $PYTHON_DB$suffix failed"; fi
    done
    # A -wal left from an earlier copy would be replayed into this one.
    rm -f "$DATA/python-agent.db-wal" "$DATA/python-agent.db-shm"
    for suffix in -wal -shm ""; do
        if [ -f "$staged$suffix" ]; then mv -f "$staged$suffix" "$DATA/python-agent.db$suffix"; fi
    done
}

convert() {
    if [ -f "$CONVERTED" ]; then
        # Taken over before: our workspace and database are the agent's own now.
        if [ -f "$DATA/python-agent.db" ]; then echo "python-agent.db"; fi
        return 0
    fi
    [ -d "$PYTHON" ] || fail "no Python Baal agent on this VM ($PYTHON is missing)"
    systemctl stop baal-agent || fail "stopping the Python agent failed"
    keep_aside "$UNITS/baal-agent.service"
    keep_aside "$CADDY/Caddyfile"
    prepare
    # A database an earlier, failed attempt left would hide the history copied now from our
    # agent, which carries it over only into a fresh database.
    for suffix in "" -wal -shm; do
        if [ -f "$DATA/agent.db$suffix" ]; then mv -f "$DATA/agent.db$suffix" "$DATA/agent.db.failed$suffix"; fi
    done
    if [ -d "$PYTHON_WORKSPACE" ]; then
        # Copied, never moved: the Python agent's files stay as they were. Links are copied as
        # links (our agent's file tools never follow them out); device nodes, sockets and FIFOs
        # the Python agent's root tools may have left are not copied at all.
        cp -R --preserve=timestamps "$PYTHON_WORKSPACE/." "$DATA/workspace/" || fail "copying the Python workspace failed"
        find "$DATA/workspace" ! -type f ! -type d ! -type l -exec rm -f {} + || fail "cleaning the copied workspace failed"
    fi
    if [ -f "$PYTHON_DB" ]; then copy_python_db; fi
    # Ours, not root's: chown also clears any set-user-ID bit a copied file had.
    chown -R "$AGENT_USER:" "$DATA"
    if [ -f "$DATA/python-agent.db" ]; then
        chmod 600 "$DATA/python-agent.db"*
        echo "python-agent.db"
    fi
}

converted() {
    date -u +%Y-%m-%dT%H:%M:%SZ > "$CONVERTED"
}

unconvert() {
    # Converted by an earlier attempt: the agent's history since then is our agent's alone, so the
    # Python agent is not put back; our agent's previous binary and settings are.
    if [ -f "$CONVERTED" ]; then
        rollback
        echo "converted-before"
        return 0
    fi
    # Nothing set aside: the conversion stopped before it changed anything (no Python agent).
    if [ ! -f "$UNITS/baal-agent.service.python" ]; then echo "nothing-set-aside"; return 0; fi
    systemctl stop baal-agent || true
    if [ -f "$UNITS/baal-agent.service.python" ]; then mv -f "$UNITS/baal-agent.service.python" "$UNITS/baal-agent.service"; fi
    if [ -f "$CADDY/Caddyfile.python" ]; then mv -f "$CADDY/Caddyfile.python" "$CADDY/Caddyfile"; fi
    rm -f "$CONVERTED"
    systemctl daemon-reload
    systemctl restart baal-agent || fail "the Python agent did not start again"
    systemctl reload-or-restart caddy || fail "Caddy did not restart with the Python agent's Caddyfile"
}

case "${1:-}" in
    prepare) prepare ;;
    install) install_agent "${2:?sha256}" ;;
    start) start ;;
    health) health ;;
    rollback) rollback ;;
    authorize) authorize ;;
    convert) convert ;;
    converted) converted ;;
    unconvert) unconvert ;;
    *) fail "usage: vm-setup.sh prepare|install SHA256|start|health|rollback|authorize|convert|converted|unconvert" ;;
esac
