"""The suite. Imported before any test module: TensorFlow loads here with its native start-up
notices held back, as the entry points load it, so they do not reach the test log."""

from longbert_tf import quiet_start

quiet_start.import_framework()
