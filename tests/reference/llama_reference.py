#!/usr/bin/python3
"""Independent LLaMA forward pass in PyTorch (float64), for checking skim's decoder.

Written from the math, not from any runtime's code:
  x = embed[ids]
  per layer:  h = RMSNorm(x) ; q,k,v = h Wq^T, h Wk^T, h Wv^T ; RoPE(q), RoPE(k)
              grouped-query causal attention (query head h reads kv head h // (H/KVH))
              x += attn Wo^T
              h = RMSNorm(x) ; x += (silu(h W1^T) * (h W3^T)) W2^T
  logits = RMSNorm(x) Wcls^T        (Wcls = embed when tied)
  RMSNorm(x) = x / sqrt(mean(x^2) + eps) * w      (eps from the file; 1e-5 for llama2.c)
  RoPE, theta = freq_base (10000), head size hd, pair index i in [0, hd/2):
      angle = pos * theta^(-2i/hd)
      --rope adjacent : rotates the pair (x[2i], x[2i+1])        (llama2.c, GGUF/llama.cpp)
      --rope halves   : rotates the pair (x[i], x[i + hd/2])     (Hugging Face LlamaModel)
All arithmetic is float64; weights are stored F32/F16/BF16 and widened exactly.

Weights are read by small readers included here (no third-party parsers):
  * llama2.c .bin  (legacy "version 0" export: 7 int32 header, fp32 arrays; vocab_size < 0
    means a separate classifier follows the RoPE tables)                  default rope: adjacent
  * Hugging Face directory (config.json + model.safetensors, or a sharded
    model.safetensors.index.json); safetensors F32/F16/BF16/F64            default rope: halves
  * GGUF v2/v3 (F32/F16/BF16 tensors; metadata of every type)              default rope: adjacent
The format is detected from the path (directory -> HF, magic "GGUF" -> GGUF, else llama2.c).

Usage (use Debian's python3, which has torch; nice it on the shared machine):
  M=/work/shared/data/models/stories260K
  # 1) prove it: greedy from BOS (token 1), 256 steps, compare with the golden ids -> prints OK
  nice -n 10 /usr/bin/python3 tests/reference/llama_reference.py --model $M/stories260K.bin \\
      --greedy 256 --expect $M/expected_greedy_from_bos_256.ids.txt
  #    same for the HF conversion and the GGUF file:
  nice -n 10 /usr/bin/python3 tests/reference/llama_reference.py --model tests/data/models/stories260K-hf \\
      --rope halves --greedy 256 --expect $M/expected_greedy_from_bos_256.ids.txt
  nice -n 10 /usr/bin/python3 tests/reference/llama_reference.py --model $M/stories260K.gguf \\
      --greedy 256 --expect $M/expected_greedy_from_bos_256.ids.txt
  # 2) reference logits of every position for a few prompts
  nice -n 10 /usr/bin/python3 tests/reference/llama_reference.py --model $M/stories260K.bin \\
      --prompts-ids builtin --out tests/data/reference/stories260K.logits.json
  # 3) inspect a file / run one forward pass on given ids
  /usr/bin/python3 tests/reference/llama_reference.py --model FILE --info --ids "1 400 401"

--prompts-ids takes "builtin" (four TinyStories sentences, ids encoded with tok512.model; if
python3-sentencepiece and the model file are present the ids are re-checked) or a file with one
prompt per line: either a JSON object {"text": ..., "ids": [...]} or whitespace-separated ids.
Output JSON: {"model", "model_sha256", "rope", "dtype": "float64", "cases": [{"text", "ids",
"logits": [[vocab floats] per position]}]}; floats are written with repr(), i.e. the shortest
decimal that round-trips the float64 exactly. Exit status is non-zero when --expect fails.
"""

import argparse
import hashlib
import json
import mmap
import os
import struct
import sys
import time

import warnings

import numpy as np
import torch

# Weights are read-only memory maps; they are only ever widened into new float64 tensors.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

BOS_ID = 1


# ----------------------------------------------------------------------------- safetensors

def _bf16_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


_ST_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2),
              "F64": (np.float64, 8)}


def read_safetensors(path):
    """Returns {name: np.ndarray} (float16/32/64; BF16 is widened to float32) and the
    __metadata__ dict. Validates offsets against the file size."""
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    (hlen,) = struct.unpack_from("<Q", buf, 0)
    if 8 + hlen > len(buf):
        raise ValueError(f"{path}: header length {hlen} exceeds file size")
    header = json.loads(bytes(buf[8:8 + hlen]).decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        npdt, size = _ST_DTYPES[dt]
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(v) for v in info["data_offsets"])
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * size or base + end > len(buf):
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {begin}..{end}")
        arr = np.frombuffer(buf, dtype=npdt, count=count, offset=base + begin).reshape(shape)
        if dt == "BF16":
            arr = _bf16_to_f32(arr)
        out[name] = arr
    return out, meta


# ----------------------------------------------------------------------------- GGUF

_GGUF_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                10: "<Q", 11: "<q", 12: "<d"}
_GGUF_TENSOR = {0: ("F32", np.float32, 4), 1: ("F16", np.float16, 2), 30: ("BF16", np.uint16, 2)}


class _Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt):
        vals = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals[0] if len(vals) == 1 else vals

    def string(self):
        n = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise ValueError("GGUF: string runs past end of file")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="surrogateescape")
        self.pos += n
        return s

    def value(self, vtype):
        if vtype in _GGUF_SCALAR:
            return self.unpack(_GGUF_SCALAR[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, count = self.unpack("<IQ")
            if etype in _GGUF_SCALAR and etype != 7:  # fast path for numeric arrays
                fmt = _GGUF_SCALAR[etype]
                arr = np.frombuffer(self.buf, dtype=np.dtype(fmt), count=count, offset=self.pos)
                self.pos += arr.nbytes
                return arr.tolist()
            return [self.value(etype) for _ in range(count)]
        raise ValueError(f"GGUF: unknown value type {vtype}")


def read_gguf(path):
    """Returns (metadata dict, {name: np.ndarray}, info dict). Tensor arrays have the
    PyTorch shape, i.e. reversed(ne): a GGUF tensor with ne = [in, out] becomes [out, in]."""
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    r = _Reader(buf)
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    r.pos = 4
    version = r.unpack("<I")
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} not supported")
    n_tensors, n_kv = r.unpack("<QQ")
    meta = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = r.value(r.unpack("<I"))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.unpack("<I")
        ne = [r.unpack("<Q") for _ in range(n_dims)]
        ttype = r.unpack("<I")
        offset = r.unpack("<Q")
        infos.append((name, ne, ttype, offset))
    align = int(meta.get("general.alignment", 32))
    data_start = (r.pos + align - 1) // align * align
    tensors = {}
    for name, ne, ttype, offset in infos:
        if ttype not in _GGUF_TENSOR:
            raise ValueError(f"{path}: tensor {name}: ggml type {ttype} not supported "
                             "(only F32/F16/BF16)")
        tname, npdt, size = _GGUF_TENSOR[ttype]
        if offset % align:
            raise ValueError(f"{path}: tensor {name}: offset {offset} not aligned to {align}")
        count = int(np.prod(ne)) if ne else 1
        if data_start + offset + count * size > len(buf):
            raise ValueError(f"{path}: tensor {name} runs past end of file")
        arr = np.frombuffer(buf, dtype=npdt, count=count, offset=data_start + offset)
        arr = arr.reshape(list(reversed(ne)))
        if tname == "BF16":
            arr = _bf16_to_f32(arr)
        tensors[name] = arr
    info = {"version": version, "alignment": align, "data_start": data_start,
            "types": {name: _GGUF_TENSOR[t][0] for name, _, t, _ in infos}}
    return meta, tensors, info


# ----------------------------------------------------------------------------- model loading

class Llama:
    """cfg: dim, hidden, n_layers, n_heads, n_kv_heads, head_dim, vocab, eps, theta, rope;
    w: canonical name -> numpy array in PyTorch [out, in] layout."""

    def __init__(self, cfg, w, source, pieces=None):
        self.cfg, self.w, self.source, self.pieces = cfg, w, source, pieces
        self._check()
        self._cache, self._cache_ok = {}, self.n_params() <= 20_000_000

    def _check(self):
        c, w = self.cfg, self.w
        d, hd, L = c["dim"], c["head_dim"], c["n_layers"]
        qd, kvd = c["n_heads"] * hd, c["n_kv_heads"] * hd
        want = {"embed": (c["vocab"], d), "norm": (d,), "cls": (c["vocab"], d)}
        for i in range(L):
            p = f"layers.{i}."
            want.update({p + "attn_norm": (d,), p + "wq": (qd, d), p + "wk": (kvd, d),
                         p + "wv": (kvd, d), p + "wo": (d, qd), p + "ffn_norm": (d,),
                         p + "w1": (c["hidden"], d), p + "w2": (d, c["hidden"]),
                         p + "w3": (c["hidden"], d)})
        for k, shape in want.items():
            if k not in w:
                raise ValueError(f"{self.source}: missing weight {k}")
            if tuple(w[k].shape) != shape:
                raise ValueError(f"{self.source}: weight {k} has shape {tuple(w[k].shape)}, "
                                 f"expected {shape}")
        if c["n_heads"] % c["n_kv_heads"]:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        if hd % 2:
            raise ValueError("head_dim must be even for RoPE")

    def t(self, name):
        """Weight as a float64 tensor (cached for small models; re-widened for big ones)."""
        if name in self._cache:
            return self._cache[name]
        out = torch.from_numpy(np.asarray(self.w[name])).to(torch.float64)
        if self._cache_ok:
            self._cache[name] = out
        return out

    def n_params(self):
        seen, n = set(), 0
        for a in self.w.values():
            if id(a) not in seen:
                seen.add(id(a))
                n += a.size
        return n


def load_llama2c(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic == 0x616B3432:
        raise ValueError(f"{path}: llama2.c 'ak42' versioned export is not supported "
                         "(only the legacy version-0 format)")
    dim, hidden, L, H, KVH, vocab, seq_len = struct.unpack_from("<7i", data, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // H
    kvd = KVH * hd
    floats = np.frombuffer(data, dtype=np.float32, offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        if pos + n > floats.size:
            raise ValueError(f"{path}: file too short")
        a = floats[pos:pos + n].reshape(shape)
        pos += n
        return a

    emb = take(vocab, dim)
    rms_att = take(L, dim)
    wq = take(L, dim, dim)
    wk = take(L, kvd, dim)
    wv = take(L, kvd, dim)
    wo = take(L, dim, dim)
    rms_ffn = take(L, dim)
    w1 = take(L, hidden, dim)
    w2 = take(L, dim, hidden)
    w3 = take(L, hidden, dim)
    rms_final = take(dim)
    take(seq_len, hd // 2)  # freq_cis_real (legacy, unused)
    take(seq_len, hd // 2)  # freq_cis_imag
    wcls = emb if shared else take(vocab, dim)
    if pos != floats.size:
        raise ValueError(f"{path}: {floats.size - pos} trailing floats; not a version-0 "
                         "llama2.c export?")
    w = {"embed": emb, "norm": rms_final, "cls": wcls}
    for i in range(L):
        p = f"layers.{i}."
        w.update({p + "attn_norm": rms_att[i], p + "wq": wq[i], p + "wk": wk[i],
                  p + "wv": wv[i], p + "wo": wo[i], p + "ffn_norm": rms_ffn[i],
                  p + "w1": w1[i], p + "w2": w2[i], p + "w3": w3[i]})
    cfg = {"dim": dim, "hidden": hidden, "n_layers": L, "n_heads": H, "n_kv_heads": KVH,
           "head_dim": hd, "vocab": vocab, "eps": 1e-5, "theta": 10000.0, "rope": "adjacent",
           "seq_len": seq_len, "tied": shared, "format": "llama2c"}
    return Llama(cfg, w, path)


def load_hf(path):
    with open(os.path.join(path, "config.json")) as f:
        conf = json.load(f)
    if conf.get("model_type", "llama") != "llama":
        print(f"warning: model_type {conf.get('model_type')!r}, treating as llama", file=sys.stderr)
    if conf.get("rope_scaling"):
        raise ValueError("rope_scaling is not supported by this reference")
    idx = os.path.join(path, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        for fn in files:
            tensors.update(read_safetensors(os.path.join(path, fn))[0])
    else:
        tensors = read_safetensors(os.path.join(path, "model.safetensors"))[0]
    dim, H = conf["hidden_size"], conf["num_attention_heads"]
    hd = conf.get("head_dim") or dim // H
    L = conf["num_hidden_layers"]
    tie = bool(conf.get("tie_word_embeddings", False))
    emb = tensors["model.embed_tokens.weight"]
    if "lm_head.weight" in tensors and not tie:
        cls = tensors["lm_head.weight"]
    else:
        if not tie:
            print("warning: no lm_head.weight and tie_word_embeddings is false; tying",
                  file=sys.stderr)
        cls = emb
    w = {"embed": emb, "norm": tensors["model.norm.weight"], "cls": cls}
    names = {"attn_norm": "input_layernorm", "wq": "self_attn.q_proj", "wk": "self_attn.k_proj",
             "wv": "self_attn.v_proj", "wo": "self_attn.o_proj",
             "ffn_norm": "post_attention_layernorm", "w1": "mlp.gate_proj",
             "w2": "mlp.down_proj", "w3": "mlp.up_proj"}
    for i in range(L):
        for k, hf in names.items():
            w[f"layers.{i}.{k}"] = tensors[f"model.layers.{i}.{hf}.weight"]
    cfg = {"dim": dim, "hidden": conf["intermediate_size"], "n_layers": L, "n_heads": H,
           "n_kv_heads": conf.get("num_key_value_heads") or H, "head_dim": hd,
           "vocab": emb.shape[0], "eps": float(conf.get("rms_norm_eps", 1e-6)),
           "theta": float(conf.get("rope_theta", 10000.0)), "rope": "halves",
           "seq_len": conf.get("max_position_embeddings"), "tied": cls is emb, "format": "hf"}
    pieces = None
    tj = os.path.join(path, "tokenizer.json")
    if os.path.exists(tj):
        with open(tj, encoding="utf-8") as f:
            vocab = json.load(f)["model"]["vocab"]
        pieces = [None] * len(vocab)
        for p, i in vocab.items():
            if i < len(pieces):
                pieces[i] = p
    return Llama(cfg, w, path, pieces)


def load_gguf(path):
    meta, t, info = read_gguf(path)
    arch = meta.get("general.architecture", "llama")
    if arch != "llama":
        print(f"warning: general.architecture {arch!r}, treating as llama", file=sys.stderr)
    g = lambda k, d=None: meta.get(f"{arch}.{k}", d)
    dim, H, L = g("embedding_length"), g("attention.head_count"), g("block_count")
    KVH = g("attention.head_count_kv", H)
    hd = dim // H
    rope_dim = g("rope.dimension_count", hd)
    if rope_dim != hd:
        raise ValueError(f"partial rotary (rope.dimension_count {rope_dim} != head_dim {hd}) "
                         "not supported")
    emb = t["token_embd.weight"]
    cls = t.get("output.weight", emb)
    w = {"embed": emb, "norm": t["output_norm.weight"], "cls": cls}
    names = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
             "wo": "attn_output", "ffn_norm": "ffn_norm", "w1": "ffn_gate", "w2": "ffn_down",
             "w3": "ffn_up"}
    for i in range(L):
        for k, gn in names.items():
            w[f"layers.{i}.{k}"] = t[f"blk.{i}.{gn}.weight"]
    cfg = {"dim": dim, "hidden": g("feed_forward_length"), "n_layers": L, "n_heads": H,
           "n_kv_heads": KVH, "head_dim": hd, "vocab": emb.shape[0],
           "eps": float(g("attention.layer_norm_rms_epsilon", 1e-5)),
           "theta": float(g("rope.freq_base", 10000.0)), "rope": "adjacent",
           "seq_len": g("context_length"), "tied": cls is emb, "format": "gguf",
           "gguf": info, "meta": meta}
    return Llama(cfg, w, path, meta.get("tokenizer.ggml.tokens"))


def load_model(path):
    if os.path.isdir(path):
        return load_hf(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return load_gguf(path)
    return load_llama2c(path)


# ----------------------------------------------------------------------------- forward

def rms_norm(x, w, eps):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def rope(x, positions, theta, convention):
    """x: [T, heads, hd] float64; positions: [T]. Returns rotated copy."""
    hd = x.shape[-1]
    half = hd // 2
    i = torch.arange(half, dtype=torch.float64)
    inv_freq = theta ** (-2.0 * i / hd)                      # [half]
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]   # [T, half]
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    if convention == "adjacent":
        a, b = x[..., 0::2], x[..., 1::2]
    elif convention == "halves":
        a, b = x[..., :half], x[..., half:]
    else:
        raise ValueError(convention)
    ra = a * cos - b * sin
    rb = a * sin + b * cos
    out = torch.empty_like(x)
    if convention == "adjacent":
        out[..., 0::2], out[..., 1::2] = ra, rb
    else:
        out[..., :half], out[..., half:] = ra, rb
    return out


def forward(model, ids, rope_conv, ffn=None):
    """Logits [T, vocab] (float64) for every position of ids (causal).
    ffn(layer, h, dense): the FFN's output for its input rows h ([T, dim],
    after ffn_norm), dense(h) the model's own; None: the model's FFN."""
    c = model.cfg
    T, H, KVH, hd = len(ids), c["n_heads"], c["n_kv_heads"], c["head_dim"]
    eps, theta = c["eps"], c["theta"]
    ids_t = torch.tensor(ids, dtype=torch.long)
    if int(ids_t.min()) < 0 or int(ids_t.max()) >= c["vocab"]:
        raise ValueError("token id out of range")
    x = torch.from_numpy(np.asarray(model.w["embed"])[ids]).to(torch.float64)
    pos = torch.arange(T)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    group = H // KVH
    for l in range(c["n_layers"]):
        p = f"layers.{l}."
        h = rms_norm(x, model.t(p + "attn_norm"), eps)
        q = (h @ model.t(p + "wq").T).view(T, H, hd)
        k = (h @ model.t(p + "wk").T).view(T, KVH, hd)
        v = (h @ model.t(p + "wv").T).view(T, KVH, hd)
        q, k = rope(q, pos, theta, rope_conv), rope(k, pos, theta, rope_conv)
        kv_of_head = torch.arange(H) // group
        k, v = k[:, kv_of_head, :], v[:, kv_of_head, :]           # [T, H, hd]
        scores = torch.einsum("qhd,khd->hqk", q, k) / (hd ** 0.5) + mask
        att = torch.softmax(scores, dim=-1)
        o = torch.einsum("hqk,khd->qhd", att, v).reshape(T, H * hd)
        x = x + o @ model.t(p + "wo").T
        h = rms_norm(x, model.t(p + "ffn_norm"), eps)

        def dense(rows, p=p):
            g = rows @ model.t(p + "w1").T
            u = rows @ model.t(p + "w3").T
            return (g * torch.sigmoid(g) * u) @ model.t(p + "w2").T
        x = x + (dense(h) if ffn is None else ffn(l, h, dense))
    x = rms_norm(x, model.t("norm"), eps)
    return x @ model.t("cls").T


def greedy(model, rope_conv, steps, start=(BOS_ID,)):
    ids = list(start)
    for _ in range(steps):
        logits = forward(model, ids, rope_conv)
        ids.append(int(torch.argmax(logits[-1])))
    return ids[len(start):]


def decode(pieces, ids):
    if not pieces:
        return None
    out = bytearray()
    for i in ids:
        p = pieces[i] if i < len(pieces) and pieces[i] is not None else "<?>"
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            out.append(int(p[3:5], 16))
        elif p in ("<s>", "</s>", "<unk>"):
            continue
        else:
            out += p.replace("\u2581", " ").encode("utf-8", errors="surrogateescape")
    return out.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------- prompts

# Sentences of TinyStories validation stories (roneneldan/TinyStories, CDLA-Sharing-1.0;
# /work/shared/data/tinystories/tinystories_valid_first1000.txt), encoded with tok512.model
# (SentencePiece, add_bos) -- see check_builtin_prompts().
BUILTIN_PROMPTS = [
    {"text": "Once upon a time, in a big park, there was a fun slide.",
     "ids": [1, 403, 407, 261, 378, 432, 322, 261, 370, 282, 295, 433, 432, 383, 286, 261, 272, 379, 262, 421, 292, 411, 426]},
    {"text": "One day, a small cat named Tim was walking in the park.",
     "ids": [1, 385, 328, 432, 261, 262, 423, 388, 280, 294, 395, 326, 286, 273, 421, 433, 299, 322, 265, 282, 295, 433, 426]},
    {"text": "The cow said, \"I am lonely. I want a friend.\"",
     "ids": [1, 291, 280, 327, 336, 432, 313, 442, 261, 423, 278, 289, 411, 421, 422, 426, 359, 391, 261, 374, 426, 436]},
    {"text": "Sue said, \"Let's try to roll it.\"",
     "ids": [1, 301, 425, 411, 336, 432, 313, 438, 316, 439, 419, 259, 420, 422, 267, 352, 414, 306, 312, 426, 436]},
]


def sentencepiece_encode(texts, model_path):
    try:
        import sentencepiece as spm  # Debian python3-sentencepiece
    except ImportError:
        return None
    if not os.path.exists(model_path):
        return None
    sp = spm.SentencePieceProcessor(model_file=model_path)
    return [[BOS_ID] + sp.encode(t) for t in texts]


def load_prompts(arg, tok_model):
    if arg == "builtin":
        cases = [dict(p) for p in BUILTIN_PROMPTS]
        enc = sentencepiece_encode([c["text"] for c in cases], tok_model)
        if enc is None:
            print("note: sentencepiece or tok512.model unavailable; using stored builtin ids",
                  file=sys.stderr)
        else:
            for c, ids in zip(cases, enc):
                if ids != c["ids"]:
                    raise SystemExit(f"builtin ids disagree with sentencepiece for {c['text']!r}:"
                                     f" stored {c['ids']} vs {ids}")
            print("builtin prompt ids re-checked with sentencepiece: OK")
        return cases
    cases = []
    with open(arg, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                obj = json.loads(line)
                cases.append({"text": obj.get("text"), "ids": [int(i) for i in obj["ids"]]})
            else:
                cases.append({"text": None, "ids": [int(i) for i in line.split()]})
    return cases


def write_logits_json(path, model_name, sha, rope_conv, cases):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        f.write(f'"model": {json.dumps(model_name)},\n')
        f.write(f'"model_sha256": {json.dumps(sha)},\n')
        f.write(f'"rope": {json.dumps(rope_conv)},\n')
        f.write('"dtype": "float64",\n')
        f.write('"cases": [\n')
        for ci, c in enumerate(cases):
            f.write(f'{{"text": {json.dumps(c["text"], ensure_ascii=False)},\n'
                    f' "ids": {json.dumps(c["ids"])},\n "logits": [\n')
            rows = c["logits"]
            for ri, row in enumerate(rows):
                f.write("  [" + ", ".join(repr(float(v)) for v in row) + "]")
                f.write(",\n" if ri + 1 < len(rows) else "\n")
            f.write("]}" + (",\n" if ci + 1 < len(cases) else "\n"))
        f.write("]\n}\n")


def sha256_of(path):
    if os.path.isdir(path):
        h = hashlib.sha256()
        for fn in sorted(os.listdir(path)):
            if fn.endswith((".safetensors", ".json")):
                h.update(fn.encode() + b"\0")
                with open(os.path.join(path, fn), "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
        return "dir:" + h.hexdigest()
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="llama2.c .bin, HF directory or .gguf")
    ap.add_argument("--rope", choices=["adjacent", "halves"],
                    help="RoPE pairing (default: adjacent for .bin/.gguf, halves for HF)")
    ap.add_argument("--info", action="store_true", help="print config and tensor shapes")
    ap.add_argument("--ids", help="run one forward pass on these whitespace-separated ids")
    ap.add_argument("--greedy", type=int, metavar="N", help="greedy-decode N tokens from BOS")
    ap.add_argument("--expect", help="file of expected greedy ids (whitespace-separated)")
    ap.add_argument("--prompts-ids", help="'builtin' or a prompts file (see docstring)")
    ap.add_argument("--out", help="output JSON for --prompts-ids")
    ap.add_argument("--tok-model", default="/work/shared/data/models/stories260K/tok512.model",
                    help="SentencePiece model used to re-check the builtin prompt ids")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.time()
    model = load_model(args.model)
    rope_conv = args.rope or model.cfg["rope"]
    c = model.cfg
    print(f"loaded {args.model} ({c['format']}) in {time.time() - t0:.2f}s: dim {c['dim']}, "
          f"hidden {c['hidden']}, layers {c['n_layers']}, heads {c['n_heads']}/{c['n_kv_heads']}, "
          f"head_dim {c['head_dim']}, vocab {c['vocab']}, eps {c['eps']}, theta {c['theta']}, "
          f"tied {c['tied']}, params {model.n_params()}; rope {rope_conv}")
    status = 0

    if args.info:
        skip = {"meta", "gguf"}
        print(json.dumps({k: v for k, v in c.items() if k not in skip}))
        if c["format"] == "gguf":
            g = c["gguf"]
            print(f"gguf version {g['version']}, alignment {g['alignment']}, "
                  f"data at {g['data_start']}")
            for k, v in c["meta"].items():
                s = repr(v) if not isinstance(v, list) else \
                    f"[{len(v)} items] {v[:5]!r}{' ...' if len(v) > 5 else ''}"
                print(f"  {k} = {s}")
            counts = {}
            for t in g["types"].values():
                counts[t] = counts.get(t, 0) + 1
            print(f"  tensor types: {counts}")
        for k, a in model.w.items():
            if k.startswith("layers.") and not k.startswith("layers.0."):
                continue
            print(f"  {k}: {tuple(a.shape)} {a.dtype}")

    if args.ids:
        ids = [int(i) for i in args.ids.split()]
        t0 = time.time()
        logits = forward(model, ids, rope_conv)
        print(f"forward on {len(ids)} ids: {time.time() - t0:.2f}s; logits {tuple(logits.shape)}, "
              f"finite {bool(torch.isfinite(logits).all())}, argmax per position "
              f"{logits.argmax(-1).tolist()}")
        print("last row first 5:", [repr(float(v)) for v in logits[-1, :5]])

    if args.greedy:
        t0 = time.time()
        out = greedy(model, rope_conv, args.greedy)
        dt = time.time() - t0
        print(f"greedy {args.greedy} steps in {dt:.2f}s")
        print("ids:", " ".join(map(str, out)))
        text = decode(model.pieces, out)
        if text is not None:
            print("text:", text.lstrip(" "))
        if args.expect:
            with open(args.expect) as f:
                exp = [int(v) for v in f.read().split()]
            n = min(len(exp), len(out))
            first_bad = next((i for i in range(n) if exp[i] != out[i]), None)
            if len(exp) == len(out) and first_bad is None:
                print(f"OK: {len(out)} greedy tokens match {args.expect}")
            else:
                print(f"MISMATCH: first difference at step {first_bad} "
                      f"(lengths {len(out)} vs {len(exp)})")
                status = 1

    if args.prompts_ids:
        if not args.out:
            raise SystemExit("--prompts-ids needs --out")
        cases = load_prompts(args.prompts_ids, args.tok_model)
        t0 = time.time()
        for cs in cases:
            if not cs["ids"] or cs["ids"][0] != BOS_ID:
                print(f"warning: prompt does not start with BOS: {cs['ids'][:4]}", file=sys.stderr)
            cs["logits"] = forward(model, cs["ids"], rope_conv).tolist()
        write_logits_json(args.out, os.path.basename(os.path.normpath(args.model)),
                          sha256_of(args.model), rope_conv, cases)
        print(f"wrote {args.out}: {len(cases)} cases, "
              f"{sum(len(cs['ids']) for cs in cases)} positions in {time.time() - t0:.2f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
