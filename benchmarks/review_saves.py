"""Time of one saved review against the size of the records file.

    python benchmarks/review_saves.py --sizes=0,10000,100000

For each size, a records file of that many records (each as long as a real one: 20 suggested
codes, near misses and decisions) is grown with `records.append`, then `--saves` more appends
are timed one by one, each flushed to disk as the server's are.
"""

import json
import os
import statistics
import tempfile
import time

from absl import app, flags

from longbert_tf import hardware
from longbert_tf.review import records

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["0", "10000", "100000"], "Records already in the file.")
flags.DEFINE_integer("saves", 50, "Timed saves at each size.")


def realistic_record(index: int) -> dict:
    codes = [dict(code=f"R{index % 90 + code:02d}.{code}", probability=0.5) for code in range(20)]
    return dict(
        note_id=f"note_{index:07d}.txt",
        text_sha256=f"{index:064x}",
        export_fingerprint="1/2/3/4",
        threshold=0.3,
        suggested=codes,
        near_misses=codes[:5],
        accepted=[code["code"] for code in codes[:10]],
        rejected=[code["code"] for code in codes[10:15]],
        added=["Z99.89"],
        outside_label_space=["Z99.89"],
        time="2026-12-07T12:00:00+00:00",
    )


def main(argv):
    del argv
    print(f"cpu: {hardware.cpu_summary()}")
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "records.jsonl")
        written = 0
        for size in sorted(int(size) for size in FLAGS.sizes):
            # The file grown without a sync per line: only the timed saves are the server's.
            with open(path, "ab") as grown:
                while written < size:
                    line = json.dumps(realistic_record(written)) + "\n"
                    grown.write(line.encode())
                    written += 1
                grown.flush()
                os.fsync(grown.fileno())  # on disk before the timed saves
            seconds = []
            for _ in range(FLAGS.saves):
                started = time.perf_counter()
                records.append(path, realistic_record(written))
                seconds.append(time.perf_counter() - started)
                written += 1
            megabytes = os.path.getsize(path) / 1e6
            print(
                f"{size:>9,} records ({megabytes:7.1f} MB): save median "
                f"{1000 * statistics.median(seconds):.2f} ms, max {1000 * max(seconds):.2f} ms"
            )


if __name__ == "__main__":
    app.run(main)
