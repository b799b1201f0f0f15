"""`python -m bench` (`make bench`): Saga Relay's benchmarks, each figure beside a same-run baseline.

The machines this runs on are small, shared and noisy, so no absolute number is
trusted on its own: every figure is measured together with a baseline (mostly a
bare RQ chain of the same four functions) in the same run, and judged as a ratio.
"""
