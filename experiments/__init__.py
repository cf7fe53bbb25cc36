"""Entry points (absl flags): run, reproduce, export, predict, pretrain, convert."""

from longbert_tf import quiet_start

quiet_start.import_framework()
