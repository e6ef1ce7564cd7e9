"""Reads every TensorBoard run under a log folder with TensorBoard's own
event reader (the one `tensorboard --logdir` uses) and prints its scalars
as JSON: {"run": {"tag": [[step, wall_time, value], ...]}}.

Usage: read_tensorboard.py LOGDIR
"""
import json
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
    SCALARS,
)


def main() -> None:
    logdir = sys.argv[1]
    out = {}
    for run in sorted(os.listdir(logdir)):
        path = os.path.join(logdir, run)
        if not os.path.isdir(path):
            continue
        # size_guidance 0: keep every point (the default samples 10,000).
        acc = EventAccumulator(path, size_guidance={SCALARS: 0})
        acc.Reload()
        out[run] = {
            tag: [[e.step, e.wall_time, e.value] for e in acc.Scalars(tag)]
            for tag in acc.Tags()[SCALARS]
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
