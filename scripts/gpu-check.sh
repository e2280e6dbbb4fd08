#!/usr/bin/env bash
# The real-GPU check: on a host with an NVIDIA GPU and its driver, as root, proves that
#   1. a whole-GPU sandbox sees exactly its GPU, with all of its memory;
#   2. a 25 % sandbox sees about a quarter of the memory, and an allocation above its share fails;
#   3. a sandbox without a GPU sees none (no device node, no driver library);
#   4. after a pause, no process of the sandbox holds GPU memory.
# It prints a report to paste into docs/gpu.md. It never changes the GPU's compute mode or MIG and
# never resets it: when the compute mode is not EXCLUSIVE_PROCESS (a shared machine), the 25 %
# sandbox runs under `gpu_soft_sharing = true`, and the report says so.
#
# Usage: sudo scripts/gpu-check.sh            (builds target/release/sandpit if missing)
#        GPU_CHECK_PLUMBING=1 ...     (no GPU needed: only the probe, image and check 3)
#        GPU_CHECK_SANDPIT=path/to/sandpit ...      (another build of sandpit)
set -euo pipefail
cd "$(dirname "$0")/.."
plumbing="${GPU_CHECK_PLUMBING:-}"

fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (sudo scripts/gpu-check.sh)"
command -v gcc >/dev/null || fail "gcc is needed to build the probe (apt-get install gcc libc6-dev)"
if [ -z "$plumbing" ]; then
  command -v nvidia-smi >/dev/null || fail "no nvidia-smi: this check needs an NVIDIA GPU and its driver"
  nvidia-smi -L >/dev/null || fail "nvidia-smi cannot talk to the driver"
fi
bin="${GPU_CHECK_SANDPIT:-target/release/sandpit}"
if [ ! -x "$bin" ]; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  cargo build --release --locked -p sandpit-cli --bin sandpit
fi

work=$(mktemp -d /tmp/sandpit-gpu-check.XXXXXX)
chmod 711 "$work"
serve_pid=
cleanup() {
  if [ -n "$serve_pid" ]; then
    HOME="$work/home" "$bin" --json list --all 2>/dev/null | grep -o '"id": *"[a-z0-9]*"' | grep -o '[a-z0-9]\{20\}' |
      while read -r id; do HOME="$work/home" "$bin" delete "$id" >/dev/null 2>&1 || true; done
    kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The probe image: busybox, the probe and the C library it links (the driver's libraries are
# mounted in by sandpit for GPU sandboxes only).
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,etc,tmp,root,proc,sys,dev}
chmod 1777 "$rootfs/tmp"
gcc -O2 -o "$rootfs/bin/probe" scripts/gpu-check/probe.c
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh cat ls grep sleep head; do ln -sf busybox "$rootfs/bin/$applet"; done
for lib in $(ldd "$rootfs/bin/probe" | grep -o '/[^ ]*'); do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
echo 'root:x:0:' > "$rootfs/etc/group"

mkdir -p "$work/home"
config="$work/sandpit.toml"
mode=EXCLUSIVE_PROCESS
if [ -z "$plumbing" ]; then
  mode=$(nvidia-smi --query-gpu=compute_mode --format=csv,noheader -i 0 | tr -d ' ' | tr 'a-z' 'A-Z')
fi
soft=false
case "$mode" in
  EXCLUSIVE_PROCESS|EXCLUSIVE-PROCESS) ;;
  *) soft=true ;;
esac
cat > "$config" <<TOML
gpu_soft_sharing = $soft
sandbox_disk = "1Gi"
[limits]
memory_default = "1Gi"
TOML
export HOME="$work/home"
"$bin" image import "$rootfs" --as sandpit/gpu-check:1 --data-dir "$work/data" --config "$config" >/dev/null

key="sp_gpucheck_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SANDPIT_BOOTSTRAP_KEY="$key" RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" \
  --data-dir "$work/data" --config "$config" >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/serve.log"; fail "sandpit serve did not start"; }
sp() { "$bin" "$@"; }
field() { grep "^$1=" | head -n1 | cut -d= -f2; }
create() { sp --json create --wait --keep-running --image sandpit/gpu-check:1 "$@" | grep -o '"id": *"[a-z0-9]*"' | head -n1 | grep -o '[a-z0-9]\{20\}'; }

echo "# sandpit GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "- host: $(uname -r), sandpit $("$bin" --version 2>/dev/null | awk '{print $2}')"
if [ -z "$plumbing" ]; then
  echo "- GPU 0: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader -i 0)"
  echo "- compute mode: $mode$([ "$soft" = true ] && echo " (not changed; fractions ran with gpu_soft_sharing = true, see the caveats)")"
fi
echo

# 3. No GPU: no device node, no driver.
id=$(create)
out=$(sp exec "$id" -- sh -c 'ls /dev/nvidia* 2>/dev/null; probe info')
echo "## 3. Sandbox without a GPU"
echo '```'; echo "$out"; echo '```'
echo "$out" | grep -q '^/dev/nvidia' && fail "a sandbox without a GPU sees /dev/nvidia*"
[ "$(echo "$out" | field driver)" = absent ] || fail "a sandbox without a GPU can load libcuda"
sp delete "$id" >/dev/null
echo "PASS: no device, no driver"
echo
if [ -n "$plumbing" ]; then
  echo "(plumbing only: checks 1, 2 and 4 need a GPU)"
  exit 0
fi

gpu_type=$(sp --json gpus | grep -o '"type": *"[^"]*"' | head -n1 | sed 's/.*: *"\(.*\)"/\1/')
[ -n "$gpu_type" ] || fail "sandpit found no GPU through NVML (see $work/serve.log)"
total_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0 | tr -d ' ')

# 1. Whole GPU.
id=$(create --gpu "$gpu_type")
out=$(sp exec "$id" -- sh -c 'nvidia-smi -L; probe info')
echo "## 1. Whole $gpu_type"
echo '```'; echo "$out"; echo '```'
[ "$(echo "$out" | grep -c '^GPU ')" = 1 ] || fail "the whole-GPU sandbox does not see exactly one GPU"
[ "$(echo "$out" | field devices)" = 1 ] || fail "CUDA does not see exactly one device"
seen=$(echo "$out" | field device_total_mib)
[ $((seen * 100 / total_mib)) -ge 95 ] || fail "the whole GPU shows $seen MiB of $total_mib"
sp delete "$id" >/dev/null
echo "PASS: one GPU, ${seen} MiB"
echo

# 2. A 25 % share: about a quarter of the memory; above it an allocation fails.
id=$(create --gpu "$gpu_type@25%")
share=$((total_mib / 4))
out=$(sp exec "$id" -- sh -c "probe info; probe alloc $((share * 80 / 100)); probe alloc $((share * 130 / 100))")
echo "## 2. 25 % of $gpu_type (share $share MiB)"
echo '```'; echo "$out"; echo '```'
ctx_total=$(echo "$out" | field ctx_total_mib)
[ "$ctx_total" -le $((share * 110 / 100)) ] || fail "the 25 % sandbox's context sees $ctx_total MiB (share $share)"
[ "$(echo "$out" | grep '^alloc=' | sed -n 1p)" = alloc=ok ] || fail "80 % of the share could not be allocated"
[ "$(echo "$out" | grep '^alloc=' | sed -n 2p)" = alloc=fail ] || fail "130 % of the share was allocated"
echo "PASS: the context sees $ctx_total MiB; 80 % of the share allocates, 130 % fails"
echo

# 4. Pause releases the GPU: a process holding memory, then pause.
sp exec "$id" -- sh -c "probe alloc $((share / 2)) 600 >/tmp/hold.log 2>&1 &" >/dev/null
sleep 3
before=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | wc -l)
sp pause "$id" >/dev/null
sleep 2
apps=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader)
echo "## 4. Pause"
echo '```'; echo "compute apps before the pause: $before"; echo "after:"; echo "${apps:-(none)}"; echo '```'
for pid in $(echo "$apps" | cut -d, -f1); do
  if grep -q "sandpit" "/proc/$pid/cgroup" 2>/dev/null && grep -q "$id" "/proc/$pid/cgroup" 2>/dev/null; then
    fail "process $pid of the paused sandbox still holds GPU memory"
  fi
done
sp delete "$id" >/dev/null
echo "PASS: no process of the paused sandbox holds GPU memory"
echo
echo "All checks passed."
