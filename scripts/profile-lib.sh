# Shared by scripts/profile-callgrind.sh, scripts/profile-syscalls.sh and
# scripts/bench-pinned.sh, which source it: free ports, the request body,
# and waiting for a server.

# A free TCP port on loopback.
free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# write_input MODEL FILE: a one-row FP32 request for iris (4 values) or dense
# (512), its values rounded to FP32 and written as json.dumps writes them.
write_input() {
    local width=4
    [[ "$1" == dense ]] && width=512
    "$PYTHON" - "$width" >"$2" <<'PY'
import json, random, struct, sys
w = int(sys.argv[1])
rng = random.Random(0)
data = [struct.unpack("<f", struct.pack("<f", rng.uniform(0.0, 8.0)))[0] for _ in range(w)]
print(json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, w], "data": data}]}))
PY
}

# wait_ready URL PID LOG: until URL answers, or fail with LOG if PID exits
# (at most 5 minutes: a server under valgrind starts slowly).
wait_ready() {
    for _ in $(seq 1 1200); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { cat "$3" >&2; exit 1; }
        sleep 0.25
    done
    echo "not ready within 5 minutes: $1" >&2
    cat "$3" >&2
    exit 1
}
