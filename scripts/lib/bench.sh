# Sourced by the benchmarks: wall-clock timing.
now() { date +%s.%N; }
# best CMD…: runs `CMD… N` for N = 1..3 (each into a fresh target of its own) and prints the
# best wall time in seconds.
best() {
    local best= t0 t1 dt
    for i in 1 2 3; do
        t0=$(now); "$@" "$i"; t1=$(now)
        dt=$(echo "$t1 - $t0" | bc)
        if [ -z "$best" ] || [ "$(echo "$dt < $best" | bc)" = 1 ]; then best=$dt; fi
    done
    echo "$best"
}
