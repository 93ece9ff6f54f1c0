#!/usr/bin/env bash
# Build the aura-trio image with buildah, start it, and check it: the image's config
# (non-root, no secret, HEALTHCHECK), that it refuses to start without a secret,
# /health, the HEALTHCHECK command, one full approval round trip, and a clean exit
# on SIGTERM. Not part of .ci/run: it takes a minute or two (vfs storage).
#
#   scripts/check-container.sh          # as root, or a user buildah/podman work for
#
# Base image: $BASE_IMAGE when set; else the Containerfile's default when it can be
# pulled; else (no registry) a local Debian bookworm base made with debootstrap and
# kept as localhost/aura-base:bookworm for the next run. The host's CA bundle is
# mounted into the build, so pip reaches the package index through a TLS proxy too.
#
# The container runs on the host's network with AURA_PORT set to a free port and
# its embedded Redis-protocol server (no REDIS_URL), with the first runtime that can
# start it: podman (as is, then with --runtime runc --cgroup-manager cgroupfs and
# lowered ulimits, which a VM without systemd and with hybrid cgroups needs), docker
# (when a daemon answers), else `buildah run`.
#
# Environment: BASE_IMAGE; IMAGE (localhost/aura-trio:check); RUNTIME (podman,
# docker or buildah: no fallback); PODMAN_FLAGS, PODMAN_RUN_FLAGS (used instead of
# the fallback flags); STORAGE_DRIVER (vfs, which works everywhere; overlay where the
# storage already uses it); ISOLATION (chroot); DEBIAN_MIRROR; CA_BUNDLE
# (/etc/ssl/certs/ca-certificates.crt).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/aura-trio:check}
LOCAL_BASE=localhost/aura-base:bookworm
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
ISOLATION=${ISOLATION:-chroot}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DEFAULT_BASE=$(sed -n 's/^ARG BASE_IMAGE=//p' Containerfile)
NAME=aura-check-$$
started=$SECONDS

say() { printf '\n== %s\n' "$*" >&2; }
note() { printf '%s\n' "$*" >&2; }
fail() { printf '\ncheck-container: FAILED: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
buildah_() { buildah --storage-driver "$STORAGE_DRIVER" "$@"; }
docker_works() { have docker && docker info >/dev/null 2>&1; }

# ---------------------------------------------------------------- base image
make_local_base() {
    if buildah_ inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then
        note "reusing $LOCAL_BASE"
        return
    fi
    have debootstrap || fail "no registry and no debootstrap (apt-get install debootstrap)"
    say "making $LOCAL_BASE with debootstrap (Debian bookworm: Python 3.11)"
    local rootfs ctr mnt
    rootfs=$(mktemp -d /var/tmp/aura-base.XXXXXX)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 \
        || { tail -20 "$rootfs.log" >&2; fail "debootstrap"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    ctr=$(buildah_ from scratch)
    mnt=$(buildah_ mount "$ctr")
    cp -a "$rootfs/." "$mnt/"
    buildah_ umount "$ctr" >/dev/null
    buildah_ config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 "$ctr"
    buildah_ commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
}

choose_base() {
    if [ -n "${BASE_IMAGE:-}" ]; then
        echo "$BASE_IMAGE"
    elif buildah_ inspect --type image "$DEFAULT_BASE" >/dev/null 2>&1 \
        || timeout 300 buildah_ pull --quiet "$DEFAULT_BASE" >/dev/null 2>&1; then
        echo "$DEFAULT_BASE"
    else
        note "cannot pull $DEFAULT_BASE: using a local base"
        make_local_base
        echo "$LOCAL_BASE"
    fi
}

# ---------------------------------------------------------------- runtimes
# podman and docker: `engine` is the command, `run_flags` go to every `run`.
engine=()
run_flags=()

can_run() {  # the image's CLI starts with this engine and these flags
    "${engine[@]}" run --rm --network host "${run_flags[@]}" "$IMAGE" --help \
        >/dev/null 2>"$workdir/probe.log"
}

choose_runtime() {
    local want=${RUNTIME:-auto}
    if [ "$want" = podman ] || { [ "$want" = auto ] && have podman; }; then
        local flags=() extra=()
        read -ra flags <<<"${PODMAN_FLAGS:-}"
        read -ra extra <<<"${PODMAN_RUN_FLAGS:-}"
        engine=(podman --storage-driver "$STORAGE_DRIVER" "${flags[@]}")
        run_flags=("${extra[@]}")
        if can_run; then RUNTIME=podman; return; fi
        if [ -z "${PODMAN_FLAGS+set}${PODMAN_RUN_FLAGS+set}" ]; then
            note "podman: $(tail -1 "$workdir/probe.log"); retrying with cgroupfs, lower ulimits"
            engine=(podman --storage-driver "$STORAGE_DRIVER" --cgroup-manager cgroupfs)
            have runc && engine+=(--runtime runc)
            run_flags=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
            if can_run; then RUNTIME=podman; return; fi
        fi
        [ "$want" = podman ] && fail "podman cannot run the image: $(tail -3 "$workdir/probe.log")"
        note "podman cannot run the image here: $(tail -1 "$workdir/probe.log")"
    fi
    if [ "$want" = docker ] || { [ "$want" = auto ] && docker_works; }; then
        engine=(docker)
        run_flags=()
        if have buildah; then buildah_ push --quiet "$IMAGE" "docker-daemon:$IMAGE"; fi
        if can_run; then RUNTIME=docker; return; fi
        fail "docker cannot run the image: $(tail -3 "$workdir/probe.log")"
    fi
    have buildah || fail "no runtime can start the image"
    RUNTIME=buildah
    engine=()
}

# start ENV... : `serve` in the background, with these environment variables added.
start() {
    local env=() pair
    for pair in "$@"; do env+=(--env "$pair"); done
    if [ "$RUNTIME" = buildah ]; then
        # `buildah run` has no --env: set it on this working container's config.
        buildah_ from --name "$NAME" --pull-never "$IMAGE" >/dev/null
        buildah_ config "${env[@]}" "$NAME"
        buildah_ run --isolation "$ISOLATION" --network host "$NAME" -- aura-trio serve \
            >"$workdir/server.log" 2>&1 &
        server_pid=$!
    else
        "${engine[@]}" run -d --name "$NAME" --network host "${run_flags[@]}" "${env[@]}" \
            "$IMAGE" >/dev/null 2>"$workdir/run.log" || fail "$(cat "$workdir/run.log")"
    fi
}

# without_secret: the image's default command, no secret given; prints what it said
# and returns its exit code.
without_secret() {
    if [ "$RUNTIME" = buildah ]; then
        local ctr code=0
        ctr=$(buildah_ from --pull-never "$IMAGE")
        buildah_ run --isolation "$ISOLATION" --network host "$ctr" -- aura-trio serve 2>&1 \
            || code=$?
        buildah_ rm "$ctr" >/dev/null
        return "$code"
    fi
    local code=0
    "${engine[@]}" run --rm --network host "${run_flags[@]}" --env AURA_PORT=0 "$IMAGE" \
        >"$workdir/refusal.log" 2>&1 || code=$?
    grep -v 'level=error msg=.*systemd' "$workdir/refusal.log" || true  # podman without systemd
    return "$code"
}

# run_in CMD... : another process in the running container (same image and env).
run_in() {
    if [ "$RUNTIME" = buildah ]; then
        buildah_ run --isolation "$ISOLATION" --network host "$NAME" -- "$@"
    else
        "${engine[@]}" exec "$NAME" "$@"
    fi
}

logs() {
    if [ "$RUNTIME" = buildah ]; then cat "$workdir/server.log"; else "${engine[@]}" logs "$NAME" 2>&1; fi
}

# The server's own process under `buildah run` (which does not pass signals on): the
# chroot shares our PID namespace, so it is a descendant of the buildah process.
server_process() {
    local pid=$1 child
    for child in $(ps -o pid= --ppid "$pid"); do
        if [[ $(ps -o args= -p "$child") == *python*aura-trio\ serve* ]]; then
            echo "$child"
        else
            server_process "$child"
        fi
    done
}

stop() {  # SIGTERM, wait; sets stop_code
    stop_code=0
    if [ "$RUNTIME" = buildah ]; then
        local pid
        pid=$(server_process "$server_pid")
        [ -n "$pid" ] || fail "cannot find the server's process under buildah ($server_pid)"
        kill -TERM "$pid"
        wait "$server_pid" || stop_code=$?
        server_pid=
    else
        "${engine[@]}" stop --time 20 "$NAME" >/dev/null 2>&1
        stop_code=$("${engine[@]}" inspect --format '{{.State.ExitCode}}' "$NAME" 2>/dev/null)
    fi
}

cleanup() {
    if [ -n "${server_pid:-}" ]; then  # a failed check left `buildah run` running
        local pids waited=0
        mapfile -t pids < <(server_process "$server_pid")
        [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
        while kill -0 "$server_pid" 2>/dev/null && [ $((waited += 1)) -le 40 ]; do sleep 0.5; done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    case ${RUNTIME:-} in
        buildah) buildah_ rm "$NAME" >/dev/null 2>&1 || true ;;
        podman | docker) "${engine[@]}" rm -f "$NAME" >/dev/null 2>&1 || true ;;
    esac
    rm -rf "${workdir:-}"
}

# ---------------------------------------------------------------- build
have python3 || fail "need python3 on the host (the round-trip client is stdlib only)"
workdir=$(mktemp -d)
server_pid=
trap cleanup EXIT

if have buildah; then
    previous=$(buildah_ images --noheading --format '{{.ID}}' "$IMAGE" 2>/dev/null || true)
    base=$(choose_base)
    say "building $IMAGE with buildah (base $base, storage $STORAGE_DRIVER, isolation $ISOLATION)"
    volumes=()
    [ -f "$CA_BUNDLE" ] && volumes=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
    buildah_ bud --isolation "$ISOLATION" --format docker --build-arg "BASE_IMAGE=$base" \
        "${volumes[@]}" -f Containerfile -t "$IMAGE" .
    # The image this one replaced, untagged now (vfs keeps a full copy of each).
    if [ -n "$previous" ] && [ "$previous" != "$(buildah_ images --noheading --format '{{.ID}}' "$IMAGE")" ]; then
        buildah_ rmi "$previous" >/dev/null 2>&1 || true
    fi
elif docker_works; then
    base=${BASE_IMAGE:-$DEFAULT_BASE}
    say "no buildah: building $IMAGE with docker (base $base)"
    docker build --build-arg "BASE_IMAGE=$base" -f Containerfile -t "$IMAGE" .
    RUNTIME=docker
else
    fail "need buildah (or docker with a daemon)"
fi
build_seconds=$((SECONDS - started))

# ---------------------------------------------------------------- the image's config
if [ "${RUNTIME:-}" = docker ] && ! have buildah; then
    image_json=$(docker image inspect "$IMAGE")
    size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
    size="$((size / 1000000)) MB"
else
    image_json=$(buildah_ inspect --type image "$IMAGE")
    size=$(buildah_ images --noheading --format '{{.Size}}' "$IMAGE")
fi
# Prints the user, then the HEALTHCHECK command one argument a line; exits non-zero
# on a root user, a secret in the image's environment, or no HEALTHCHECK on /health.
facts=$(python3 - "$image_json" <<'EOF'
import json, sys
image = json.loads(sys.argv[1])
image = image[0] if isinstance(image, list) else image  # docker: a list; buildah: one
config = image["Docker"]["config"] if "Docker" in image else image["Config"]
user = config.get("User") or ""
if user.split(":")[0] in ("", "0", "root"):
    sys.exit(f"the image runs as root (User {user!r})")
secrets = [e for e in config.get("Env") or [] if e.split("=")[0] in ("SECRET_KEY", "JWT_SECRET")]
if secrets:
    sys.exit(f"a secret is baked into the image: {secrets}")
test = (config.get("Healthcheck") or {}).get("Test") or []
if test[:1] != ["CMD"] or "/health" not in " ".join(test):
    sys.exit(f"no HEALTHCHECK on /health: {test}")
print(user, *test[1:], sep="\n")
EOF
) || fail "the image's config"
mapfile -t probe <<<"$facts"
user=${probe[0]}
probe=("${probe[@]:1}")
say "image $IMAGE: $size, built in ${build_seconds}s"
note "user $user; no secret in its environment; HEALTHCHECK on /health"

# ---------------------------------------------------------------- run
choose_runtime
note "runtime: $RUNTIME ${engine[*]:1} ${run_flags[*]}"

say "starting it without a secret: it must refuse"
code=0
refusal=$(without_secret) || code=$?
if [ "$code" != 2 ] || [[ $refusal != *SECRET_KEY* ]]; then fail "without a secret: exit $code: $refusal"; fi
note "exit 2: $refusal"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
say "starting it on 127.0.0.1:$port (host network, embedded Redis)"
start "SECRET_KEY=$secret" "AURA_PORT=$port"
launched=$SECONDS
until python3 - "$port" 2>/dev/null <<'EOF'
import http.client, sys
connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=2)
connection.request("GET", "/health")
response = connection.getresponse()
sys.exit(0 if response.status == 200 and b'"UP"' in response.read() else 1)
EOF
do
    [ $((SECONDS - launched)) -lt 60 ] || { logs | tail -30 >&2; fail "/health: no 200 within 60 s"; }
    sleep 0.5
done
note "GET /health -> 200 after $((SECONDS - launched)) s"

if [ "$RUNTIME" = podman ]; then
    "${engine[@]}" healthcheck run "$NAME" 2>/dev/null || fail "podman healthcheck run"
    note "podman healthcheck run -> $("${engine[@]}" inspect --format '{{.State.Health.Status}}' "$NAME")"
else
    run_in "${probe[@]}" || fail "the image's HEALTHCHECK command failed"
    note "the image's HEALTHCHECK command -> exit 0"
fi
uid=$(run_in id -u)
[ "$uid" != 0 ] || fail "the container runs as root"
note "processes in the container run as uid $uid"

say "one approval round trip"
token=$(run_in aura-trio token --sub check-user --tenant check-tenant --ttl 600)
python3 scripts/round_trip.py "http://127.0.0.1:$port" --token "$token" --tenant check-tenant \
    || { logs | tail -30 >&2; fail "round trip"; }

say "stopping it (SIGTERM)"
stop
[ "$stop_code" = 0 ] || { logs | tail -30 >&2; fail "exit code $stop_code after SIGTERM"; }
logs | grep -q '"msg": "stopped"' || fail "no 'stopped' in its log"
note "exit 0; its log ends: $(logs | tail -1)"

printf '\ncheck-container: OK in %ss: image %s (%s, base %s), runtime %s: refuses without a secret, /health, HEALTHCHECK, uid %s, approval round trip, SIGTERM -> exit 0\n' \
    "$((SECONDS - started))" "$IMAGE" "$size" "$base" "$RUNTIME" "$uid"
