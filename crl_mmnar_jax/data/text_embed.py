"""Text encoders for clinical notes: fixed-width embeddings, one row per document.

`get_encoder(name, dim=768, **kw)` returns an object with ``.name``, ``.dim`` and
``.encode(texts) -> (N, dim) float32``. Two encoders:

``"hashed"`` (default; offline, deterministic, needs no download)
  1. Lower-case the text and split it into word tokens (runs of ``[a-z0-9]``); drop a
     fixed list of English stop words (`STOP_WORDS`) and MIMIC's de-identification
     placeholder ``___`` (it is not a word character run, so it never becomes a token).
  2. Unigrams and bigrams of the remaining tokens, hashed into ``2**18`` buckets. A
     unigram's 32-bit hash is CRC-32 of its UTF-8 bytes (``zlib.crc32``: the same on
     every platform, process and Python version, unlike Python's salted ``hash``); a
     bigram's is a fixed integer mix of its two unigram hashes (`_mix`).
  3. Sublinear term frequency ``1 + log(tf)`` per bucket, L2-normalised. There is no
     IDF on purpose: an IDF would be fitted on some set of documents, which makes a
     patient's embedding depend on the other patients (and on which of them are in
     the training split). With plain sublinear TF every document's embedding depends
     on its own text only; the stop-word list stands in for IDF's down-weighting of
     the most common words.
  4. A fixed sparse random projection to ``dim`` columns: bucket ``b`` adds
     ``±w / sqrt(K)`` to ``K = 8`` columns chosen by a splitmix64 hash of ``(seed, b,
     k)`` (pure integer arithmetic, so it does not depend on numpy's random streams),
     then L2 normalisation. Inner products of the normalised TF vectors are preserved
     in expectation (Achlioptas / Li sparse projections).

  An empty text, or one with no token left after step 1, encodes to the zero vector.

``"bioclinicalbert"`` (optional; needs ``transformers`` and ``torch``, the ``text`` extra,
and the weights of ``emilyalsentzer/Bio_ClinicalBERT`` in a local folder, ``model_path=``)
  Each text is tokenised without special tokens and cut into OVERLAPPING windows of
  510 word pieces starting every ``stride`` (default `BERT_STRIDE` = 255, half a
  window) word pieces, the last window ending at the text's end (`window_starts`), so
  no word piece is seen only at a window's edge; each window gets ``[CLS]`` / ``[SEP]``
  and goes through the model; the last hidden state is mean-pooled over the window's
  tokens; the document's embedding is the token-count-weighted mean over its windows,
  L2-normalised (``normalize=True``, like the hashed encoder's rows): all 768
  dimensions, never truncated. ``device``: "auto" (CUDA when available, else CPU),
  "cpu", "cuda" or "cuda:N". No network access is attempted
  (``local_files_only=True``). An empty text encodes to the zero vector. A missing
  package or folder raises `DataError` with the fix.
"""

from __future__ import annotations

import functools
import os
import re
import zlib
from typing import Sequence

import numpy as np

from crl_mmnar_jax.data.errors import DataError

ENCODERS = ("hashed", "bioclinicalbert")
N_BUCKETS = 1 << 18
NONZEROS_PER_BUCKET = 8
BERT_WINDOW = 510           # word pieces per window, plus [CLS] and [SEP]
BERT_STRIDE = 255           # word pieces between window starts (overlap: 255)
_TOKEN = re.compile(r"[a-z0-9]+")
_CACHE_LIMIT = 1_000_000    # unigram hashes kept in memory before the cache is reset
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for
from further had has have having he her here hers herself him himself his how i if in
into is it its itself just me more most my myself no nor not of off on once only or
other our ours ourselves out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your
yours yourself yourselves
""".split())

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x_N: np.ndarray) -> np.ndarray:
  """The splitmix64 finaliser on uint64 (wrapping arithmetic), elementwise."""
  with np.errstate(over="ignore"):
    z = (x_N + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return z ^ (z >> np.uint64(31))


def _mix(a_N: np.ndarray, b_N: np.ndarray) -> np.ndarray:
  """A bigram's 64-bit hash from its two unigram CRC-32 hashes."""
  return _splitmix64((a_N.astype(np.uint64) << np.uint64(32)) | b_N.astype(np.uint64))


@functools.lru_cache(maxsize=4)
def _projection(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(columns, signed weights), each (N_BUCKETS, NONZEROS_PER_BUCKET), of the projection."""
  k = NONZEROS_PER_BUCKET
  idx = np.arange(N_BUCKETS * k, dtype=np.uint64) + np.uint64(seed) * np.uint64(N_BUCKETS * k)
  h = _splitmix64(idx)
  cols = (h % np.uint64(dim)).astype(np.int64).reshape(N_BUCKETS, k)
  signs = np.where((h >> np.uint64(63)) == 1, 1.0, -1.0).reshape(N_BUCKETS, k)
  return cols, (signs / np.sqrt(k)).astype(np.float64)


class HashedEncoder:
  """Hashed unigram+bigram sublinear TF with a fixed sparse random projection."""

  name = "hashed"

  def __init__(self, dim: int = 768, seed: int = 0):
    if int(dim) < 1:
      raise DataError(f"text encoder 'hashed': dim must be positive, got {dim}")
    self.dim = int(dim)
    self.seed = int(seed)
    self._unigram: dict[str, int] = {}

  def _hashes(self, tokens: list[str]) -> np.ndarray:
    cache = self._unigram
    if len(cache) > _CACHE_LIMIT:
      cache.clear()
    out = []
    for t in tokens:
      h = cache.get(t)
      if h is None:
        h = cache[t] = zlib.crc32(t.encode("utf-8"))
      out.append(h)
    return np.asarray(out, dtype=np.uint64)

  def buckets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(bucket ids, L2-normalised sublinear TF weights) of one text (steps 1-3)."""
    tokens = [t for t in _TOKEN.findall(text.lower()) if t not in STOP_WORDS]
    if not tokens:
      return np.zeros(0, np.int64), np.zeros(0, np.float64)
    h_T = self._hashes(tokens)
    keys = np.concatenate([h_T, _mix(h_T[:-1], h_T[1:])])
    ids, tf = np.unique((keys % np.uint64(N_BUCKETS)).astype(np.int64), return_counts=True)
    w = 1.0 + np.log(tf.astype(np.float64))
    return ids, w / np.linalg.norm(w)

  def encode(self, texts: Sequence[str]) -> np.ndarray:
    """(N, dim) float32, each row L2-normalised (or zero for an empty text)."""
    cols, weights = _projection(self.dim, self.seed)
    out_NxD = np.zeros((len(texts), self.dim), np.float64)
    for i, text in enumerate(texts):
      ids, w = self.buckets(text or "")
      if ids.size:
        row = np.bincount(cols[ids].ravel(), weights=(w[:, None] * weights[ids]).ravel(),
                          minlength=self.dim)
        norm = np.linalg.norm(row)
        out_NxD[i] = row / norm if norm > 0 else 0.0
    return out_NxD.astype(np.float32)


def window_starts(n_tokens: int, window: int = BERT_WINDOW,
                  stride: int = BERT_STRIDE) -> list[int]:
  """Start offsets of overlapping windows of `window` tokens covering `n_tokens`: every
  `stride` tokens, plus a last window ending at the end ([] for no token)."""
  if not 0 < stride <= window:
    raise DataError(f"text encoder: stride must be in [1, {window}], got {stride}")
  if n_tokens <= window:
    return [0] if n_tokens > 0 else []
  starts = list(range(0, n_tokens - window, stride))
  return starts + [n_tokens - window]


def pick_device(device: str, torch) -> str:
  """"auto": "cuda" when torch sees a GPU, else "cpu"; anything else as given."""
  if device == "auto":
    return "cuda" if torch.cuda.is_available() else "cpu"
  if device != "cpu" and not str(device).startswith("cuda"):
    raise DataError(f"text encoder device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
  return device


class BertEncoder:
  """Bio_ClinicalBERT from a local folder: overlapping windows, mean-pooled last hidden
  state, L2-normalised, 768 dims."""

  name = "bioclinicalbert"

  def __init__(self, model_path: str, dim: int = 768, batch_size: int = 8,
               stride: int = BERT_STRIDE, normalize: bool = True, device: str = "auto"):
    try:
      import torch  # pylint: disable=import-outside-toplevel
      import transformers  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise DataError(f"text encoder 'bioclinicalbert' needs the packages transformers and "
                      f"torch ({e}); install the `text` extra (your torch build first, then "
                      f"pip install -e '.[text]'), or use data.text_encoder=hashed") from None
    if not model_path or not os.path.isdir(model_path):
      raise DataError(f"text encoder 'bioclinicalbert': model folder {model_path!r} not "
                      f"found; download emilyalsentzer/Bio_ClinicalBERT and pass its folder "
                      f"as data.text_model_path")
    try:
      self._tokenizer = transformers.AutoTokenizer.from_pretrained(
          model_path, local_files_only=True)
      self._model = transformers.AutoModel.from_pretrained(
          model_path, local_files_only=True).eval()
    except (OSError, ValueError) as e:
      raise DataError(f"{model_path}: cannot load Bio_ClinicalBERT weights ({e})") from None
    hidden = int(self._model.config.hidden_size)
    if hidden != int(dim):
      raise DataError(f"{model_path}: the model's hidden size is {hidden}, not dim={dim}")
    self.dim = hidden
    self._torch = torch
    self._batch_size = int(batch_size)
    window_starts(BERT_WINDOW + 1, stride=int(stride))       # checks the stride
    self._stride = int(stride)
    self._normalize = bool(normalize)
    self.device = pick_device(str(device), torch)
    self._model = self._model.to(self.device)

  def _windows(self, text: str) -> list[list[int]]:
    ids = self._tokenizer(text or "", add_special_tokens=False)["input_ids"]
    cls, sep = self._tokenizer.cls_token_id, self._tokenizer.sep_token_id
    return [[cls] + ids[s:s + BERT_WINDOW] + [sep]
            for s in window_starts(len(ids), stride=self._stride)]

  def encode(self, texts: Sequence[str]) -> np.ndarray:
    """(N, dim) float32: token-weighted mean over the overlapping windows of each text,
    L2-normalised (zero for an empty text)."""
    windows = [(i, w) for i, text in enumerate(texts) for w in self._windows(text)]
    sums_NxD = np.zeros((len(texts), self.dim), np.float64)
    counts_N = np.zeros(len(texts), np.float64)
    torch = self._torch
    for s in range(0, len(windows), self._batch_size):
      batch = windows[s:s + self._batch_size]
      width = max(len(w) for _, w in batch)
      ids_BxL = torch.tensor([w + [0] * (width - len(w)) for _, w in batch],
                             device=self.device)
      mask_BxL = torch.tensor([[1] * len(w) + [0] * (width - len(w)) for _, w in batch],
                              device=self.device)
      with torch.no_grad():
        hidden_BxLxD = self._model(input_ids=ids_BxL, attention_mask=mask_BxL).last_hidden_state
      m = mask_BxL.unsqueeze(-1).to(hidden_BxLxD.dtype)
      summed_BxD = (hidden_BxLxD * m).sum(1).double().cpu().numpy()
      for (i, w), row in zip(batch, summed_BxD):
        sums_NxD[i] += row
        counts_N[i] += len(w)
    out_NxD = sums_NxD / np.maximum(counts_N, 1.0)[:, None]
    if self._normalize:
      norm_N = np.linalg.norm(out_NxD, axis=1, keepdims=True)
      out_NxD = np.where(norm_N > 0, out_NxD / np.where(norm_N > 0, norm_N, 1.0), 0.0)
    return out_NxD.astype(np.float32)


def get_encoder(name: str, *, dim: int = 768, **kw) -> HashedEncoder | BertEncoder:
  """The text encoder called `name` (one of `ENCODERS`).

  Args:
    name: "hashed" (offline default) or "bioclinicalbert".
    dim: output width (768; for Bio_ClinicalBERT it must equal the hidden size).
    **kw: "hashed": ``seed`` (default 0); "bioclinicalbert": ``model_path`` (a local
      folder holding the weights), ``batch_size``, ``stride``, ``normalize``,
      ``device``.

  Raises:
    DataError: an unknown name; for Bio_ClinicalBERT, missing packages or weights.
  """
  if name == "hashed":
    return HashedEncoder(dim=dim, **kw)
  if name == "bioclinicalbert":
    return BertEncoder(dim=dim, **kw)
  raise DataError(f"text encoder {name!r}: must be one of {list(ENCODERS)}")
