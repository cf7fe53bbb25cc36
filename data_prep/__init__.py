"""Dataset preparation, one module per source (mimic3, mimic4, codiesp, synthetic)."""

from longbert_tf import quiet_start

quiet_start.import_framework()
