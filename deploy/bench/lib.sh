# shellcheck shell=bash
# Shared by deploy/bench/ab.sh and peer.sh (sourced, not run).

# cpu_ticks PID: utime + stime of the whole process, then stime alone
# (kernel time: the system calls and the wake-ups they cause), in clock
# ticks.
cpu_ticks() {
    local stat f
    stat="$(<"/proc/$1/stat")"
    # Fields after "(comm)" start at field 3 (state): utime is field 14.
    read -r -a f <<<"${stat##*) }"
    echo "$((f[11] + f[12])) ${f[12]}"
}

# stop_process PID: SIGTERM, up to 15 s for it to exit (a proxy drains;
# with no clients left that is immediate), then SIGKILL.
stop_process() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 150); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
