"""A coder's review page: the model's codes for a note beside their evidence, accepted,
rejected or added with one key, every decision kept as a JSON line.

    python -m experiments.review --export_dir=exports/coder --notes_dir=notes
    # then open http://127.0.0.1:8000/
    python -m experiments.review --summary --records=review_records.jsonl
    python -m experiments.review --summary --format=csv > final_codes.csv

The page and its API are described in docs/review.md.
"""

import ipaddress
import json
import os

from absl import app, flags, logging

from longbert_tf.data import descriptions
from longbert_tf.review import records as review_records
from longbert_tf.review import server as review_server
from longbert_tf.serving import suggestions

FLAGS = flags.FLAGS
flags.DEFINE_string("export_dir", None, "A text-input export of experiments.export.")
flags.DEFINE_string("notes_dir", None, "A folder of notes (.txt, UTF-8) listed on the page.")
flags.DEFINE_string("records", "review_records.jsonl", "The review records (JSON lines).")
flags.DEFINE_string("host", "127.0.0.1", "The address to listen on; others than loopback warn.")
flags.DEFINE_integer("port", 8000, "The port to listen on (0: any free one, printed).")
flags.DEFINE_string(
    "descriptions_file", None, "code<TAB>description lines beside those the export carries."
)
flags.DEFINE_bool("summary", False, "Print what --records teach instead of serving.")
flags.DEFINE_enum(
    "format",
    "text",
    ["text", "json", "csv"],
    "--summary as text, JSON, or a CSV of the final codes (accepted and added) of every note.",
)


def print_summary(records: list) -> None:
    if FLAGS.format == "csv":
        print(review_records.final_codes_csv(records), end="")
        return
    summary = review_records.summary(records)
    if FLAGS.format == "json":
        print(json.dumps(summary, indent=2))
        return
    print(f"notes reviewed: {summary['notes']}")
    print(
        f"suggestions: {summary['accepted']} accepted, {summary['rejected']} rejected, "
        f"{summary['undecided']} undecided; {summary['added']} codes added"
    )
    for name, key in (
        ("precision (coder-judged)", "precision"),
        ("suggested share of final codes", "suggested_share"),
    ):
        value = summary[key]
        print(f"{name}: {'-' if value is None else f'{value:.3f}'}")
    for name, key in (("most often rejected", "most_rejected"), ("most often added", "most_added")):
        print(f"{name}: " + (", ".join(f"{code} ({count})" for code, count in summary[key]) or "-"))
    print("agreement per code (accepted / (accepted + rejected + added)):")
    for code, row in summary["per_code"].items():
        print(
            f"  {code:<10} {row['agreement']:.2f}  accepted {row['accepted']}, "
            f"rejected {row['rejected']}, added {row['added']}"
        )


def main(argv):
    del argv
    if FLAGS.summary:
        if not os.path.exists(FLAGS.records):
            raise app.UsageError(f"--records={FLAGS.records} does not exist: nothing reviewed yet")
        return print_summary(review_records.read(FLAGS.records))
    if not FLAGS.export_dir:
        raise app.UsageError("--export_dir is required to serve the page")
    if FLAGS.notes_dir and not os.path.isdir(FLAGS.notes_dir):
        raise app.UsageError(f"--notes_dir={FLAGS.notes_dir} is not a folder")
    review_records.read(FLAGS.records)  # a damaged records file stops us before serving
    extra = {}
    if FLAGS.descriptions_file:
        extra = descriptions.read_descriptions(FLAGS.descriptions_file)
    suggester = suggestions.Suggester(FLAGS.export_dir, extra)
    suggester.suggest(["warm-up"])  # the export's first call optimises its graph: seconds
    reviewer = review_server.Reviewer(suggester, FLAGS.records, FLAGS.notes_dir)
    server = review_server.make_server(reviewer, FLAGS.host, FLAGS.port)
    if not _loopback(FLAGS.host):
        logging.warning(
            "listening on %s: anyone who reaches this machine can read the notes and write "
            "records, and there is no sign-in; keep it on 127.0.0.1 unless that is intended",
            FLAGS.host,
        )
    host, port = server.server_address[:2]
    # The address on stdout, flushed, for people and for programs that started us.
    print(f"review page: http://{host}:{port}/ (records: {FLAGS.records})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


if __name__ == "__main__":
    app.run(main)
