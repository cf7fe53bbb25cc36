"""A coder's review page: the model's codes for a note beside their evidence, accepted,
rejected or added with one key, every decision kept as a JSON line.

    python -m experiments.review --export_dir=exports/coder --notes_dir=notes
    # then open http://127.0.0.1:8000/
    python -m experiments.review --export_dir=exports/coder --notes_dir=notes \
        --host=10.0.0.5 --access_token_file=token.txt --public_url=https://coding.example.org
    # behind a TLS proxy: open https://coding.example.org/?token=TOKEN once
    python -m experiments.review --export_dir=exports/codiesp --notes_dir=test/text_files \
        --translations_dir=test/text_files_en  # an export that reads the translation too
    python -m experiments.review --summary --records=review_records.jsonl
    python -m experiments.review --summary --format=csv > final_codes.csv

The page and its API are described in docs/review.md.
"""

import json
import os

from absl import app, flags, logging

from longbert_tf.data import descriptions
from longbert_tf.review import access
from longbert_tf.review import records as review_records
from longbert_tf.review import server as review_server
from longbert_tf.serving import suggestions

FLAGS = flags.FLAGS
flags.DEFINE_string("export_dir", None, "A text-input export of experiments.export.")
flags.DEFINE_string("notes_dir", None, "A folder of notes (.txt, UTF-8) listed on the page.")
flags.DEFINE_string(
    "translations_dir",
    None,
    "For an export that reads each note's translation too: the folder of the notes' "
    "translations, each under its note's file name.",
)
flags.DEFINE_string("records", "review_records.jsonl", "The review records (JSON lines).")
flags.DEFINE_string(
    "host", "127.0.0.1", "The address to listen on; one beyond loopback needs --access_token_file."
)
flags.DEFINE_integer("port", 8000, "The port to listen on (0: any free one, printed).")
flags.DEFINE_string(
    "access_token_file",
    None,
    "A file holding the access token (at least 24 characters) every request must carry: "
    "required beyond loopback, where TLS must stand in front (docs/review.md).",
)
flags.DEFINE_string(
    "public_url",
    None,
    "The address people open when a proxy stands in front (https://coding.example.org): "
    "its host is answered and its origin may save reviews.",
)
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
    token = read_token(FLAGS.access_token_file) if FLAGS.access_token_file else None
    try:
        access.check_listening(FLAGS.host, token)
    except ValueError as error:
        raise app.UsageError(f"--host={FLAGS.host}: {error}") from None
    if FLAGS.public_url:
        try:
            access.public_origin(FLAGS.public_url)
        except ValueError as error:
            raise app.UsageError(f"--public_url: {error}") from None
    extra = {}
    if FLAGS.descriptions_file:
        extra = descriptions.read_descriptions(FLAGS.descriptions_file)
    suggester = suggestions.Suggester(FLAGS.export_dir, extra)
    # The export's first call optimises its graph: seconds.
    suggester.suggest(["warm-up"], ["warm-up"] if suggester.reads_translation else None)
    # A damaged records line is logged as FILE:LINE and skipped; the server starts anyway.
    try:
        reviewer = review_server.Reviewer(
            suggester, FLAGS.records, FLAGS.notes_dir, translations_dir=FLAGS.translations_dir
        )
    except ValueError as error:
        raise app.UsageError(f"--translations_dir: {error}") from None
    server = review_server.make_server(reviewer, FLAGS.host, FLAGS.port, token, FLAGS.public_url)
    logging.info("answering for %s", ", ".join(sorted(server.access.hosts)))
    host, port = server.server_address[:2]
    # The address on stdout, flushed, for people and for programs that started us.
    print(f"review page: http://{host}:{port}/ (records: {FLAGS.records})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def read_token(path: str) -> str:
    """The access token in `path` (surrounding white space dropped)."""
    try:
        with open(path, encoding="utf-8") as token_file:
            token = token_file.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise app.UsageError(f"--access_token_file={path}: {error}") from None
    if not token or any(character.isspace() for character in token):
        raise app.UsageError(f"--access_token_file={path} must hold one token, no spaces")
    return token


if __name__ == "__main__":
    app.run(main)
