"""Side-by-side benchmarks against the peers (configs/bench/*.yaml): ours and the peer's
in one process, compile time reported apart from steady-state time."""
