"""tools/bench_train.py's timing arithmetic: which intervals are timed, which hold a save."""

import sys

from tests.training.launch import REPO

sys.path.insert(0, str(REPO / "tools"))
import bench_train  # noqa: E402


def test_step_intervals_skip_the_warmup_and_split_out_saves():
    ends = [float(step * step) for step in range(1, 14)]  # step s took 2s - 1 seconds
    plain, saved = bench_train.step_intervals(ends, warmup=3, save_every=4)
    assert saved == [9.0, 17.0, 25.0]  # steps 5, 9, 13: right after the saves at 4, 8, 12
    assert plain == [7.0, 11.0, 13.0, 15.0, 19.0, 21.0, 23.0]  # steps 4, 6, 7, 8, 10, 11, 12
    assert bench_train.step_intervals(ends, warmup=10)[0] == [21.0, 23.0, 25.0]


def test_a_stall_is_the_excess_over_the_steps_away_from_saves():
    timing = bench_train.Timing(intervals=[1.0, 1.0, 1.2, 0.8], first_step_end=5.0, after_save=[3.0, 1.5])
    line = bench_train.stall_line("1rank", "blocking", timing)
    assert "step   1.0000 s" in line and "stall at a save   1.2500 s" in line and "(each: 2.000, 0.500)" in line
    assert "excess/save   1.2500 s" in line
