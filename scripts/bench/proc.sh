# What the benchmark scripts read of a running process in /proc; sourced by them.

# CPU time (user + system) process $1 has used so far, in clock ticks
# (`getconf CLK_TCK` a second); fails if it has exited.
cpu_ticks() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # After the command name, which may hold spaces: utime is the 12th field, stime the 13th.
    read -r -a fields <<<"${stat##*) }"
    echo $((fields[11] + fields[12]))
}

# Resident memory (VmRSS) of process $1, in KiB; fails if it has exited.
rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null
}

# Waits until presence-loadgen, pid $2, has logged "driving" to $1 (its setup,
# the inventory and the devices, is done), or has exited.
wait_for_drive() {
    until grep -q driving "$1" 2>/dev/null || ! kill -0 "$2" 2>/dev/null; do
        sleep 0.05
    done
}
