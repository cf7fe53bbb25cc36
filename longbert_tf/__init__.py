"""longbert-tf: ICD coding of long clinical notes with segment-wise BERT and label attention.

Subpackages follow the data from raw notes to codes, and import only those
before them: `data` -> `modeling` -> `evaluation` -> `training` -> `lexical`
-> `serving` -> `review`, all on the base modules `framework`, `files`,
`configs`, `presets`, `hardware`, `distribute` and `run_folder`. See
docs/design.md.
"""

__version__ = "0.1.0"
