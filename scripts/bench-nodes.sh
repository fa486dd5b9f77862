#!/usr/bin/env bash
# A primary and two node daemons over one store directory on this machine (issue 17,
# docs/DEPLOYMENT.md): how long a revocation on the primary takes to stop a reader holding a file
# open on a node (REVOKES rounds: median and max), what catching up costs a node per second in a
# store of FILES files (idle, and with a policy change every 100 ms), read throughput through
# a node's mount against the primary's own, measured alternately, and what one key ring commit
# (an import's) spends rewriting the key bundles of 16 nodes with a ring of 1,000, 10,000 and
# 100,000 versions' keys (tests/bench/bench_bundles.c). Not part of CI (timings on a shared
# machine are noisy): compare within one run.
#
# Usage: scripts/bench-nodes.sh [FILES] [SIZE_MIB] [REVOKES]   (as root; defaults 100000 256 50)
set -euo pipefail
cd "$(dirname "$0")/.."
bench="bench-nodes"
. scripts/bench-lib.sh

files=${1:-100000}
size_mib=${2:-256}
revokes=${3:-50}
case "$files$size_mib$revokes" in *[!0-9]*) echo "usage: scripts/bench-nodes.sh [FILES] [SIZE_MIB] [REVOKES]" >&2; exit 2 ;; esac
bench_need_root

bash scripts/deps.sh >/dev/null
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j "$(nproc)" --target enclaved enclavectl bench_bundles >/dev/null
enclaved=$PWD/build-bench/daemon/enclaved
enclavectl=$PWD/build-bench/cli/enclavectl

user=enclave-bench-reader
id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
bench_scratch
chmod 0755 "$scratch"
store=$scratch/store
pids=()
mnts=("$scratch/mnt" "$scratch/mnt-n1" "$scratch/mnt-n2")
mkdir -p "$scratch/src/big" "$scratch/src/many" "${mnts[@]}"

head -c $((size_mib << 20)) /dev/urandom >"$scratch/src/big/big.bin"
python3 - "$scratch/src/many" "$files" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, "%03d" % (i % 1000))
    if i < 1000:
        os.mkdir(sub)
    with open(os.path.join(sub, "f%d" % i), "wb") as f:
        f.write(os.urandom(64))
EOF
chmod -R a+rX "$scratch/src"
head -c 32 /dev/urandom | base64 >"$scratch/pass"
chmod 0600 "$scratch/pass"
"$enclavectl" init --store "$store" --passphrase-file "$scratch/pass" --steward user:root --approvals 0 >/dev/null
"$enclaved" --store "$store" --mount "${mnts[0]}" --passphrase-file "$scratch/pass" 2>"$scratch/primary.log" &
pids+=($!)
for _ in $(seq 1 100); do "$enclavectl" --store "$store" status >/dev/null 2>&1 && break; sleep 0.1; done
ctl() { "$enclavectl" --store "$store" "$@"; }
t0=$(date +%s.%N)
ctl -q dataset import many "$scratch/src/many" >/dev/null
t1=$(date +%s.%N)
ctl -q dataset import big "$scratch/src/big" >/dev/null
ctl audit pubkey >"$scratch/primary.pub"
for n in 1 2; do
	# A node's key pair, enrolled (approvals 0 here: at once); it runs without the passphrase.
	"$enclaved" --node "n$n" --init --local "$scratch/local-n$n" --primary-key "$scratch/primary.pub" >/dev/null
	ctl node add "n$n" "$scratch/local-n$n/node.pub" >/dev/null
	"$enclaved" --node "n$n" --store "$store" --mount "${mnts[$n]}" --local "$scratch/local-n$n" \
		2>"$scratch/n$n.log" &
	pids+=($!)
done
for n in 1 2; do
	for _ in $(seq 1 200); do grep -q "serving" "$scratch/n$n.log" && break; sleep 0.1; done
done
node_pid=${pids[1]}
echo "store: $files files in dataset many (imported in $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s), $size_mib MiB in dataset big; a primary and 2 nodes"

python3 - "$store" "$enclavectl" "$user" "${mnts[0]}" "${mnts[1]}" "$revokes" "$node_pid" "$scratch" "$files" <<'EOF'
import os, pwd, subprocess, sys, time, statistics, json

store, ctl, user, pmnt, nmnt, revokes, node_pid, scratch, nfiles = sys.argv[1:10]
revokes, node_pid = int(revokes), int(node_pid)
pw = pwd.getpwnam(user)

def run(*args):
    return subprocess.run([ctl, "--store", store] + list(args), check=True,
                          capture_output=True, text=True).stdout

def grant(ds):
    out = run("--json", "grant", "add", "--user", user, "--dataset", ds, "--purpose",
              "benchmark", "--expires", "+1h")
    return json.loads(out)["grant"]["id"]

def as_user(fn):
    """Fork a child that becomes the reader user and runs fn(w) with a pipe to the parent."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
        try:
            fn(w)
        finally:
            os._exit(0)
    os.close(w)
    return pid, os.fdopen(r, "rb", buffering=0)

def until_opens(path, timeout=10):
    def child(w):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with open(path, "rb") as f:
                    f.read(4096)
                os.write(w, b"y")
                return
            except OSError:
                time.sleep(0.005)
        os.write(w, b"n")
    pid, r = as_user(child)
    ok = r.read(1) == b"y"
    os.waitpid(pid, 0)
    return ok

def cpu_ms(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK")

# ---- Read throughput: the node's mount against the primary's, alternating ----
gid = grant("big")
big_p = os.path.join(pmnt, "big/latest/big.bin")
big_n = os.path.join(nmnt, "big/latest/big.bin")
assert until_opens(big_p) and until_opens(big_n)

def read_rate(path):
    def child(w):
        buf = bytearray(1 << 20)
        t = time.monotonic()
        n = 0
        with open(path, "rb", buffering=0) as f:
            while True:
                k = f.readinto(buf)
                if not k:
                    break
                n += k
        os.write(w, ("%f" % (n / (time.monotonic() - t) / 1e6)).encode())
    pid, r = as_user(child)
    v = float(r.read(64))
    os.waitpid(pid, 0)
    return v

read_rate(big_p); read_rate(big_n)       # warm both
rates = {"primary": [], "node": []}
for _ in range(3):
    rates["primary"].append(read_rate(big_p))
    rates["node"].append(read_rate(big_n))
mp, mn = statistics.median(rates["primary"]), statistics.median(rates["node"])
print("read %s MiB, warm, 1 MiB reads, 3 rounds alternating: primary's mount %.0f MB/s, node's mount %.0f MB/s (node/primary %.2f)"
      % (os.path.getsize(os.path.join(scratch, "src/big/big.bin")) >> 20, mp, mn, mn / mp))
run("grant", "revoke", str(gid), "--reason", "bench")

# ---- Revocation latency: a reader holding the file open on node 1 ----
lat, cli = [], []
for i in range(revokes):
    gid = grant("big")
    assert until_opens(big_n), "the grant did not reach the node"
    def child(w):
        f = open(big_n, "rb", buffering=0)
        f.read(4096)
        os.write(w, b"r")
        while True:
            try:
                os.pread(f.fileno(), 4096, 0)
            except OSError:
                os.write(w, ("%.9f" % time.time()).encode())
                return
            time.sleep(0.001)
    pid, r = as_user(child)
    assert r.read(1) == b"r"
    t0 = time.time()
    run("grant", "revoke", str(gid), "--reason", "bench")
    t1 = time.time()
    refused = float(r.read(64))
    os.waitpid(pid, 0)
    lat.append((refused - t0) * 1000)
    cli.append((t1 - t0) * 1000)
lat.sort()
print("revocation on the primary to the refusal of a held-open file on a node, %d rounds: "
      "median %.0f ms, max %.0f ms (p90 %.0f ms); the revoke command alone: median %.0f ms"
      % (revokes, statistics.median(lat), lat[-1], lat[int(len(lat) * 0.9) - 1],
         statistics.median(cli)))

# ---- Catch-up cost: node CPU per second, idle and under a change every 100 ms ----
def node_cpu(seconds, change):
    c0, t0 = cpu_ms(node_pid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        if change:
            g = grant("big")
            run("grant", "revoke", str(g), "--reason", "bench")
        time.sleep(0.1)
    return (cpu_ms(node_pid) - c0) / (time.monotonic() - t0)
idle = node_cpu(10, False)
busy = node_cpu(10, True)
print("a node's CPU (its whole process: catch-up thread, polls, FUSE idle) with %s files in "
      "the store: %.1f ms/s idle (heartbeat every 250 ms), %.1f ms/s with a grant and a "
      "revocation every ~100 ms" % ("{:,}".format(int(nfiles)), idle, busy))
EOF

# ---- Bundles: one key ring commit rewrites every enrolled node's bundle (nodes x entries) ----
for entries in 1000 10000 100000; do
	rounds=20
	[[ $entries -ge 100000 ]] && rounds=5
	build-bench/tests/bench_bundles "$scratch/bundles-$entries" "$entries" 16 "$rounds"
done
