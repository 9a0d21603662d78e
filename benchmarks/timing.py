"""Interleaved timing shared by the benchmarks: each round runs every variant once, so a noisy neighbour slows all alike."""
import statistics
import time


def interleaved(variants: dict, rounds: int, sync=lambda: None) -> tuple[dict, dict]:
    "`(wall, cpu)`: each variant's median seconds per call over `rounds` rounds, wall clock and CPU time."
    wall, cpu = {k: [] for k in variants}, {k: [] for k in variants}
    for _ in range(rounds):
        for k, f in variants.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            f()
            sync()
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
    return tuple({k: statistics.median(v) for k, v in d.items()} for d in (wall, cpu))
