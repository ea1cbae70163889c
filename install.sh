#!/usr/bin/env bash
# Install Carte on Debian 12 as root, start its daemon, and show it doing its main job: import a
# busybox image, run a container from it, deploy the example stack and fetch a page from it.
#
#   ./install.sh                 install or update (idempotent: safe to run again)
#   ./install.sh --uninstall     remove stacks, stop containers, remove Carte; keeps
#                                /var/lib/carte (images, containers, volumes, state)
#   ./install.sh --uninstall --purge   ... removes containers and /var/lib/carte too
#   ./install.sh --server tcp://HOST:PORT --token T [--name N] [--label K=V]...
#                                install, then join the cluster at HOST:PORT as a node (no demo);
#                                --uninstall on a node drains it and leaves the cluster first
#
# What it sets up: system packages Carte needs at run time, net.ipv4.ip_forward=1, the `carte`
# group (its members may use the client: root-equivalent, like the docker group), Carte in a
# virtualenv at /opt/carte with /usr/local/bin/carte, /etc/carte/carte.yaml (kept if present),
# and the daemon: a systemd unit where systemd runs, otherwise a supervised background process
# (restart loop) with its pid in /run/carte/supervisor.pid (the daemon's own is in
# /run/carte/daemon.pid) and its log in /var/log/carte/daemon.log.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX=/opt/carte
BIN=/usr/local/bin/carte
ETC=/etc/carte
ROOT_DIR=/var/lib/carte
RUN_DIR=/run/carte
LOG_DIR=/var/log/carte
SUPERVISOR_PID="$RUN_DIR/supervisor.pid"
SOCKET="$RUN_DIR/carte.sock"
SYSCTL_FILE=/etc/sysctl.d/99-carte.conf
EXAMPLE_STACK="$REPO/config/examples/stack-web-db.yaml"
EXAMPLE_STACK_NAME=web-db
EXAMPLE_URL=http://127.0.0.1:8080/
UNIT=/etc/systemd/system/carte.service
RUNTIME_PACKAGES=(python3 python3-venv ca-certificates busybox-static nftables iproute2 libseccomp2 uidmap kmod)

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

have_systemd() { [ -d /run/systemd/system ] && [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; }

install_packages() {
    local missing=()
    for pkg in "${RUNTIME_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "system packages already installed"
        return
    fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

configure_sysctl() {
    printf '# Carte: containers reach the outside world through the host (NAT).\nnet.ipv4.ip_forward = 1\n' \
        >"$SYSCTL_FILE"
    sysctl -q -p "$SYSCTL_FILE" >/dev/null || say "warning: could not apply $SYSCTL_FILE now"
}

create_group() {
    getent group carte >/dev/null || groupadd --system carte
}

install_carte() {
    local python=/usr/bin/python3
    [ -x "$python" ] || python="$(command -v python3)"
    if [ ! -x "$PREFIX/bin/python" ]; then
        say "creating virtualenv $PREFIX"
        "$python" -m venv "$PREFIX"
    fi
    # pip 25 and later write the `carte` script without `import re` (~4 ms of each start)
    "$PREFIX/bin/pip" install -qq --disable-pip-version-check --upgrade "pip>=25" \
        || say "warning: could not upgrade pip; carte will start a few ms slower"
    say "installing Carte from $REPO into $PREFIX"
    local had_build=no
    [ -d "$REPO/build" ] && had_build=yes
    "$PREFIX/bin/pip" install -qq --disable-pip-version-check "$REPO"
    # Same version number, new code: reinstall Carte itself (dependencies stay).
    "$PREFIX/bin/pip" install -qq --disable-pip-version-check --force-reinstall --no-deps "$REPO"
    [ "$had_build" = yes ] || rm -rf "$REPO/build"  # setuptools' in-tree build leftovers
    ln -sf "$PREFIX/bin/carte" "$BIN"
    mkdir -p "$ETC" "$ROOT_DIR" "$LOG_DIR"
    if [ ! -f "$ETC/carte.yaml" ] && [ -f "$REPO/config/carte.yaml" ]; then
        install -m 0644 "$REPO/config/carte.yaml" "$ETC/carte.yaml"
    fi
}

write_supervisor() {
    cat >"$PREFIX/bin/carte-supervise" <<'EOF'
#!/usr/bin/env bash
# Keep `carte daemon` running where systemd is not PID 1: restart it when it exits, with a
# growing pause (1 s doubling to 30 s, reset after a minute of uptime). SIGTERM stops both.
set -u
pidfile=/run/carte/supervisor.pid
child=
stopping=
stop() {
    stopping=1
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"
    rm -f "$pidfile"
    exit 0
}
trap stop TERM INT
mkdir -p /run/carte
echo $$ >"$pidfile"
pause=1
while [ -z "$stopping" ]; do
    started=$(date +%s)
    /opt/carte/bin/carte daemon "$@" &
    child=$!
    wait "$child"
    code=$?
    child=
    [ $(( $(date +%s) - started )) -ge 60 ] && pause=1
    echo "carte-supervise: carte daemon exited with $code; restarting in ${pause}s" >&2
    sleep "$pause" &
    wait $!
    pause=$(( pause * 2 > 30 ? 30 : pause * 2 ))
done
EOF
    chmod 0755 "$PREFIX/bin/carte-supervise"
}

supervisor_running() {
    [ -f "$SUPERVISOR_PID" ] && kill -0 "$(cat "$SUPERVISOR_PID")" 2>/dev/null
}

stop_supervisor() {
    supervisor_running || return 0
    local pid
    pid="$(cat "$SUPERVISOR_PID")"
    kill -TERM "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "the Carte supervisor (pid $pid) did not stop; kill it and retry"
    rm -f "$SUPERVISOR_PID"
}

start_daemon() {
    if have_systemd; then
        say "installing systemd unit carte.service"
        install -m 0644 "$REPO/config/carte.service" "$UNIT"
        systemctl daemon-reload
        systemctl enable --quiet carte.service
        systemctl restart carte.service
        return
    fi
    write_supervisor
    stop_supervisor
    say "starting the daemon (no systemd here: supervised, pid in $SUPERVISOR_PID)"
    mkdir -p "$RUN_DIR"
    setsid "$PREFIX/bin/carte-supervise" </dev/null >>"$LOG_DIR/daemon.log" 2>&1 &
    for _ in $(seq 50); do [ -f "$SUPERVISOR_PID" ] && break; sleep 0.1; done
}

wait_for_ping() {
    for _ in $(seq 300); do
        # `images` needs the images handler, which starts after the API answers `version`.
        if "$BIN" --host "unix://$SOCKET" images -q >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 5 "$LOG_DIR/daemon.log" >&2 2>/dev/null || true
    die "the daemon did not answer on $SOCKET within 30 s; see $LOG_DIR/daemon.log"
}

carte_cli() { "$BIN" --host "unix://$SOCKET" "$@"; }

show_info() {
    say "carte info"
    local info
    info="$(carte_cli info)" || die "carte info failed; see $LOG_DIR/daemon.log"
    sed -n '1,7p' <<<"$info"
}

import_busybox() {
    local found
    found="$(carte_cli images -q -f reference=busybox:latest)" \
        || die "listing images failed; see $LOG_DIR/daemon.log"
    if [ -n "$found" ]; then
        say "image busybox:latest is already imported"
        return
    fi
    say "importing busybox:latest (a rootfs made from Debian's busybox-static)"
    local work
    work="$(mktemp -d)"
    if "$PREFIX/bin/python" "$REPO/tests/support/busybox.py" --tar "$work/busybox.tar" "$work" \
        && carte_cli import "$work/busybox.tar" busybox:latest >/dev/null; then
        rm -rf "$work"
        return
    fi
    rm -rf "$work"
    die "importing busybox:latest failed; check that busybox-static is installed and see $LOG_DIR/daemon.log"
}

run_hello() {
    say "carte run --rm busybox echo \"Hello from a Carte container\""
    carte_cli run --rm busybox echo "Hello from a Carte container" \
        || die "running a busybox container failed; run \`carte system check\` and see $LOG_DIR/daemon.log"
}

# Print the page at $1, retrying until it answers with a non-empty page or $2 seconds pass.
fetch_page() {
    "$PREFIX/bin/python" - "$1" "$2" <<'EOF'
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:
            page = reply.read().decode(errors="replace").strip()
        if page:
            print(page)
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.5)
EOF
}

deploy_example_stack() {
    if [ ! -f "$EXAMPLE_STACK" ]; then
        say "no example stack at $EXAMPLE_STACK; skipping the stack demo"
        return
    fi
    say "carte apply -n $EXAMPLE_STACK_NAME -f ${EXAMPLE_STACK#"$REPO"/}"
    carte_cli apply -n "$EXAMPLE_STACK_NAME" -f "$EXAMPLE_STACK" \
        || die "deploying the example stack failed; see \`carte stack ps $EXAMPLE_STACK_NAME\` and $LOG_DIR/daemon.log"
    say "waiting for the web service on $EXAMPLE_URL (up to 60 s)"
    local page
    page="$(fetch_page "$EXAMPLE_URL" 60)" \
        || die "the example stack did not serve $EXAMPLE_URL within 60 s; is port 8080 free? see \`carte service ls\` and \`carte service logs ${EXAMPLE_STACK_NAME}_web\`"
    say "GET $EXAMPLE_URL -> $page"
    # Each new connection goes to a ready replica picked by the kernel: the answers differ.
    for _ in 1 2 3; do
        page="$(fetch_page "$EXAMPLE_URL" 10)" || die "$EXAMPLE_URL stopped answering; see \`carte service ps ${EXAMPLE_STACK_NAME}_web\`"
        say "GET $EXAMPLE_URL -> $page"
    done
    # The web tier asks the db service by its name, which resolves to the db service's VIP.
    page="$(fetch_page "${EXAMPLE_URL}cgi-bin/db" 20)" \
        || die "the web service could not reach the db service within 20 s; see \`carte service logs ${EXAMPLE_STACK_NAME}_db\`"
    say "GET ${EXAMPLE_URL}cgi-bin/db -> $page"
    say "carte service ls"
    carte_cli service ls "$EXAMPLE_STACK_NAME" || die "carte service ls failed; see $LOG_DIR/daemon.log"
}

# Before the daemon goes, so nothing keeps running without it: remove the stacks (else their
# replicas would be replaced as soon as they stop), then stop the other containers, or with
# --purge remove them and unused networks.
stop_workloads() {
    local purge="$1"
    carte_cli version >/dev/null 2>&1 || return 0
    local stacks ids
    stacks="$(carte_cli --format json stack ls 2>/dev/null | stack_names)" || stacks=""
    for stack in $stacks; do
        say "removing stack $stack"
        carte_cli stack rm "$stack" >/dev/null || say "warning: could not remove stack $stack"
    done
    if [ "$purge" = yes ]; then
        ids="$(carte_cli ps -a -q || true)"
        # shellcheck disable=SC2086
        [ -z "$ids" ] || carte_cli rm -f $ids >/dev/null || say "warning: could not remove every container"
        carte_cli network prune >/dev/null 2>&1 || true
    else
        ids="$(carte_cli ps -q || true)"
        [ -z "$ids" ] || say "stopping $(wc -w <<<"$ids") running container(s)"
        # shellcheck disable=SC2086
        [ -z "$ids" ] || carte_cli stop $ids >/dev/null || say "warning: could not stop every container"
    fi
}

stack_names() {
    "$PREFIX/bin/python" -c 'import json, sys
for stack in json.load(sys.stdin):
    print(stack.get("name") or stack.get("Name") or "")'
}

# A node of a cluster leaves it first: its control plane drains it (its replicas move to
# other nodes) and removes it, revoking its certificate.
leave_cluster() {
    carte_cli version >/dev/null 2>&1 || return 0
    local role
    role="$(carte_cli --format json cluster status 2>/dev/null | cluster_role)" || role=""
    [ "$role" = worker ] || return 0
    say "draining this node and leaving its cluster (up to 60 s)"
    carte_cli node leave || say "warning: could not leave the cluster cleanly; remove this node on the control plane (carte node rm)"
}

cluster_role() {
    "$PREFIX/bin/python" -c 'import json, sys; print(json.load(sys.stdin).get("role", ""))'
}

join_cluster() {
    local server="$1" token="$2" name="$3"
    shift 3
    local role
    role="$(carte_cli --format json cluster status | cluster_role)" \
        || die "carte cluster status failed; see $LOG_DIR/daemon.log"
    if [ "$role" = worker ]; then
        say "this node is already in a cluster: carte cluster status"
        return
    fi
    local args=(--token "$token" --server "$server")
    [ -z "$name" ] || args+=(--name "$name")
    for label in "$@"; do args+=(--label "$label"); done
    say "joining the cluster at $server"
    carte_cli node join "${args[@]}" \
        || die "joining $server failed (see the line above); get a fresh token with carte cluster join-token on the control plane"
}

uninstall() {
    local purge="$1"
    [ -x "$BIN" ] && leave_cluster
    [ -x "$BIN" ] && stop_workloads "$purge"
    if have_systemd && [ -f "$UNIT" ]; then
        systemctl disable --now --quiet carte.service || true
        rm -f "$UNIT"
        systemctl daemon-reload
    fi
    stop_supervisor
    rm -rf "$PREFIX" "$BIN" "$SYSCTL_FILE" "$ETC" "$LOG_DIR"
    # The run root, but for /run/carte/seccomp: compiled seccomp filters that any `carte
    # runtime` on this host may be using (a cache; /run is emptied at boot).
    find "$RUN_DIR" -mindepth 1 -maxdepth 1 ! -name seccomp -exec rm -rf --one-file-system {} + 2>/dev/null || true
    rmdir "$RUN_DIR" 2>/dev/null || true
    getent group carte >/dev/null && groupdel carte
    if [ "$purge" = yes ]; then
        rm -rf "$ROOT_DIR"
        say "removed Carte and its data ($ROOT_DIR)"
    else
        say "removed Carte; kept $ROOT_DIR (use --uninstall --purge to remove it)"
    fi
    say "system packages (nftables, iproute2, ...) were left installed"
}

main() {
    [ "$(id -u)" -eq 0 ] || die "run as root (sudo ./install.sh)"
    local action=install purge=no server="" token="" name=""
    local labels=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --uninstall) action=uninstall ;;
            --purge) purge=yes ;;
            --server | --token | --name | --label)
                [ $# -ge 2 ] || die "$1 needs a value"
                case "$1" in
                    --server) server="$2" ;;
                    --token) token="$2" ;;
                    --name) name="$2" ;;
                    --label) labels+=("$2") ;;
                esac
                shift ;;
            -h | --help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown option \"$1\"; use --uninstall [--purge], --server URL --token T, or --help" ;;
        esac
        shift
    done
    if [ -n "$server$token" ]; then
        [ -n "$server" ] && [ -n "$token" ] || die "--server and --token go together"
        [ "$action" = install ] || die "--server/--token join a cluster; they do not go with --uninstall"
    fi
    if [ "$action" = uninstall ]; then
        uninstall "$purge"
        return
    fi
    [ "$purge" = no ] || die "--purge goes with --uninstall"
    install_packages
    configure_sysctl
    create_group
    install_carte
    start_daemon
    wait_for_ping
    say "Carte is running; members of group carte may use it (that is root-equivalent)"
    if [ -n "$server" ]; then
        join_cluster "$server" "$token" "$name" "${labels[@]}"
        say "done: this machine is a node of $server (carte cluster status); leave: ./install.sh --uninstall"
        return
    fi
    show_info
    import_busybox
    run_hello
    deploy_example_stack
    say "done. Next: carte --help; the stack: carte stack rm $EXAMPLE_STACK_NAME; uninstall: ./install.sh --uninstall"
}

main "$@"
