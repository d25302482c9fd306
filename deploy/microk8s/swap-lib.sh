# Shared by swap-in and swap-out (sourced): settings, dry-run aware step runner, failure
# handling, and small helpers. See swap-in for the settings.

SNAP_DATA="${SNAP_DATA:-/var/snap/microk8s/current}"
RAFTKINE="${RAFTKINE:-raftkine}"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
DQLITE_UNIT="${DQLITE_UNIT:-snap.microk8s.daemon-k8s-dqlite}"
KUBELITE_UNIT="${KUBELITE_UNIT:-snap.microk8s.daemon-kubelite}"
RAFTKINE_UNIT="${RAFTKINE_UNIT:-raftkine-microk8s}"
UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"
APISERVER_CHECK="${APISERVER_CHECK:-microk8s kubectl get --raw /readyz}"
BACKUP_ROOT="${BACKUP_ROOT:-$SNAP_DATA/var/kubernetes/raftkine-swap}"
WAIT_SECONDS="${WAIT_SECONDS:-120}"
FAIL_AT="${RAFTKINE_SWAP_FAIL_AT:-}"

BACKEND="$SNAP_DATA/var/kubernetes/backend"
ARGS_FILE="$SNAP_DATA/args/k8s-dqlite"
SOCKET="$BACKEND/kine.sock:12379"
STAMP="$(date +%Y%m%d-%H%M%S)"
WORK="$BACKUP_ROOT/$STAMP"
DRY_RUN=0
STAGE_PID=""
DONE_STEPS=" "

parse_args() {
    for arg in "$@"; do
        case "$arg" in
            --dry-run) DRY_RUN=1 ;;
            -h|--help) sed -n '2,/^set -eEuo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
        esac
    done
    if [ "$DRY_RUN" = 1 ]; then echo "(dry run: nothing is changed)"; fi
}

step() { echo "==> [$1] ${*:2}"; }

# Runs a command, or prints it in a dry run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        echo "    would run: $*"
    else
        echo "    $*"
        "$@"
    fi
}

sc() { $SYSTEMCTL "$@"; }

fail() { echo "!! $*" >&2; return 1; }

# Marks a step done (what rollback has to undo); nothing is undone in a dry run.
mark() { if [ "$DRY_RUN" = 0 ]; then DONE_STEPS="$DONE_STEPS$1 "; fi; }
done_step() { case "$DONE_STEPS" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# The rollback drill: RAFTKINE_SWAP_FAIL_AT=step makes that step fail.
fail_point() {
    if [ "$FAIL_AT" = "$1" ]; then fail "failing after step $1 on purpose (RAFTKINE_SWAP_FAIL_AT)"; fi
}

on_failure() {
    local undo="$1"
    trap - ERR
    if [ "$DRY_RUN" = 0 ]; then "$undo"; fi
    exit 1
}

require_dir() { [ -d "$1" ] || fail "missing directory $1"; }
require_file() { [ -f "$1" ] || fail "missing file $1"; }

write_file() {
    if [ "$DRY_RUN" = 1 ]; then
        echo "    would write $1: $2"
    else
        echo "    write $1: $2"
        printf '%s\n' "$2" >"$1"
    fi
}

# Entries of a dqlite cluster.yaml (lines starting a list item).
count_nodes() { if [ -f "$1" ]; then grep -c '^- ' "$1" || true; else echo 0; fi; }

# The Address of an info.yaml / init.yaml.
yaml_address() {
    if [ -f "$1" ]; then sed -n 's/^ *Address: *//p' "$1" | head -n1 | tr -d '"'"'"; fi
}

# Entries in a migrator backup dir.
count_keys() { find "$1" -maxdepth 1 -name '*.key' | wc -l | tr -d ' '; }

free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
    done
    fail "no free port"
}

# Waits for a unix socket to accept connections (default: the node's kine socket).
wait_socket() {
    local sock="${1:-$SOCKET}" waited=0
    while [ "$waited" -lt "$((WAIT_SECONDS * 5))" ]; do
        # An empty copy of a probe prefix onto itself: any etcd API that answers passes.
        if [ -S "$sock" ] && "$RAFTKINE" migrate --from "unix://$sock" --prefix "/raftkine-swap-probe/" --endpoint "unix://$sock" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    fail "nothing answers on $sock"
}

wait_healthy() {
    if [ "$DRY_RUN" = 1 ]; then echo "    would wait for: $APISERVER_CHECK"; return 0; fi
    local waited=0
    until bash -c "$APISERVER_CHECK" >/dev/null 2>&1; do
        waited=$((waited + 1))
        [ "$waited" -lt "$WAIT_SECONDS" ] || fail "kube-apiserver is not healthy ($APISERVER_CHECK)"
        sleep 1
    done
    echo "    kube-apiserver is healthy"
}

# Gives the new dir the old one's owner, group and mode (MicroK8s shares it with group microk8s).
copy_ownership() {
    if [ "$DRY_RUN" = 1 ]; then echo "    would copy owner/group/mode of $1 to $2"; return 0; fi
    chown --reference="$1" "$2" 2>/dev/null || true
    chmod --reference="$1" "$2" 2>/dev/null || true
}

# raftkine's unit: runs the node's k8s-dqlite args file through run-raftkine-with-args.
install_unit() {
    local unit="$UNIT_DIR/$RAFTKINE_UNIT.service"
    if [ "$DRY_RUN" = 1 ]; then echo "    would install $unit"; return 0; fi
    mkdir -p "$UNIT_DIR"
    cat >"$unit" <<EOF
[Unit]
Description=raftkine in place of k8s-dqlite (MicroK8s)
After=network-online.target
Wants=network-online.target

[Service]
Environment=SNAP_DATA=$SNAP_DATA
Environment=RAFTKINE=$RAFTKINE
ExecStart=$here/run-raftkine-with-args
Restart=always
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=30
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
EOF
    echo "    installed $unit"
    sc daemon-reload || true
}
