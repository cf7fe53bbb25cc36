"""The coders' review application: a loaded export's codes beside their evidence, and the
coder's decisions kept.

- `server`: the page and its JSON API (`Reviewer`, `make_server`), the API form of a note's
  codes with code point offsets (`note_for_api`);
- `access`: who the server answers (its host names, the launch secret, the access token);
- `records`: one JSON line per saved review, and what the records teach (`summary`);
- `page/`: the page's HTML, CSS and JavaScript, package data served from the package.

Imports `serving` (a loaded export, `serving.suggestions.Suggester`) and the base modules.
"""

from longbert_tf.review import access, records, server
from longbert_tf.review.server import Reviewer, make_server, note_for_api

__all__ = ["Reviewer", "access", "make_server", "note_for_api", "records", "server"]
