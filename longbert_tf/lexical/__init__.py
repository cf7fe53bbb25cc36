"""The lexical coder: code-book terms and their variants matched in a note, fused with a
model's codes.

- `term_matcher`: the term index (`TermIndex`) and the in-graph matcher (`TermMatcher`), notes
  in, per code match features and evidence spans out; `code_terms`: the index of a label
  space, from its code-book terms and variants mined from the training notes.
- `fusion`: a model's logits and the match features combined by a logistic regression
  (`Fusion`); `fitting`: fitting it on a finished run's dev notes and scoring it.

`fitting` imports `data`, `evaluation` and `training` (a run's experiment and best weights);
the other modules only the base modules.
"""

from longbert_tf.lexical import code_terms, fitting, fusion, term_matcher
from longbert_tf.lexical.fitting import carry_fusion, fit_run_fusion
from longbert_tf.lexical.fusion import Fusion
from longbert_tf.lexical.term_matcher import TermIndex, TermMatcher

__all__ = [
    "Fusion",
    "TermIndex",
    "TermMatcher",
    "carry_fusion",
    "code_terms",
    "fit_run_fusion",
    "fitting",
    "fusion",
    "term_matcher",
]
