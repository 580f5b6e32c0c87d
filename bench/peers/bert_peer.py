#!/usr/bin/python3
"""PyTorch peer for skim's encoder benchmark (run with Debian's /usr/bin/python3).

BERT written from the math in plain torch ops (F.linear, F.layer_norm, softmax,
erf GELU), fp32, eval semantics, timed under torch.inference_mode():

  layer/B/S   one BERT-base-shaped post-LN encoder layer (hidden 768, 12 heads,
              FFN 3072, erf GELU, LayerNorm eps 1e-12), weights normal(0, 0.02)
              from a fixed seed, input hidden states normal(0, 1) [B, S, 768],
              no padding (no attention mask).
  model/B     a whole BertForSequenceClassification read from a Hugging Face
              directory (config.json + model.safetensors), run over a list of
              input-id sequences (--ids, JSON list of lists of ints) in chunks
              of B sequences in the given order; a chunk is padded to its
              longest sequence with pad_token_id and masked. One repetition =
              one pass over the whole list. B = 0 means "all in one batch".

It also exports the same layer and the same model to ONNX (dynamic batch and
sequence axes) into --scratch, together with the exact inputs it timed and its
own outputs on them, for ort_peer.mjs (ONNX Runtime) to run and check.

Prints a JSON report (also written to --json FILE).

  /usr/bin/python3 bench/peers/bert_peer.py --threads 2
  /usr/bin/python3 bench/peers/bert_peer.py --model DIR --ids ids.json --model-batches 1,8
  /usr/bin/python3 bench/peers/bert_peer.py --write-random-model DIR [--random-dtype F16]
"""

import argparse
import json
import math
import mmap
import os
import platform
import struct
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads and OpenBLAS threads (default 2)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs per case (default 5)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per case, >= 20 recommended (default 30)")
    p.add_argument("--seq", type=int, default=128, help="layer sequence length (default 128)")
    p.add_argument("--layer-batches", default="1,8", help="layer batch sizes, comma list; empty = skip (default 1,8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="Hugging Face BERT directory (config.json + model.safetensors)")
    p.add_argument("--ids", help="JSON file: list of input-id lists (with [CLS]/[SEP]) for the whole model")
    p.add_argument("--model-batches", default="1,0", help="whole-model chunk sizes, comma list, 0 = all (default 1,0)")
    p.add_argument("--scratch", default="/tmp/skim-peers", help="where ONNX files, inputs and references go")
    p.add_argument("--opset", type=int, default=0, help="ONNX opset (default: 17 if supported, else 13)")
    p.add_argument("--no-export", action="store_true", help="do not export ONNX / write references")
    p.add_argument("--no-time", action="store_true", help="export only, do not time")
    p.add_argument("--json", help="also write the JSON report here")
    p.add_argument("--write-random-model", metavar="DIR",
                   help="write a random BertForSequenceClassification (config.json, model.safetensors, vocab.txt) and exit")
    p.add_argument("--random-layers", type=int, default=12)
    p.add_argument("--random-hidden", type=int, default=768)
    p.add_argument("--random-heads", type=int, default=12)
    p.add_argument("--random-ffn", type=int, default=3072)
    p.add_argument("--random-labels", type=int, default=151)
    p.add_argument("--random-dtype", default="F32", choices=["F32", "F16", "BF16"])
    p.add_argument("--random-vocab", default="/work/shared/data/vocab/bert-base-uncased-vocab.txt",
                   help="vocab.txt to copy into the random model dir")
    a = p.parse_args(argv)
    a.layer_batches = [int(x) for x in a.layer_batches.split(",") if x.strip()]
    a.model_batches = [int(x) for x in a.model_batches.split(",") if x.strip()]
    return a


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads > 0:
    # Must be set before torch (and so OpenBLAS / OpenMP) is loaded. A value the
    # caller already exported wins; set_num_threads below applies at run time too.
    os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(ARGS.threads))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from blas_env import openblas_info, set_threads  # noqa: E402


# ---------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, JSON header, raw data.

_ST_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2),
              "F64": (np.float64, 8), "I64": (np.int64, 8), "I32": (np.int32, 4),
              "I16": (np.int16, 2), "I8": (np.int8, 1), "U8": (np.uint8, 1), "BOOL": (np.bool_, 1)}


def bf16_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(f32):
    u = np.ascontiguousarray(f32, dtype=np.float32).view(np.uint32)
    # round to nearest even; NaN stays NaN (not produced by random weights)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def read_safetensors(path):
    """Returns {name: np.ndarray}; float storage (F32/F16/BF16/F64) becomes float32."""
    out = {}
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        if len(mm) < 8:
            raise ValueError(f"{path}: too short for safetensors")
        (n,) = struct.unpack("<Q", mm[:8])
        if n > len(mm) - 8:
            raise ValueError(f"{path}: header length {n} past end of file")
        header = json.loads(mm[8:8 + n].decode("utf-8"))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dt = info["dtype"]
            if dt not in _ST_DTYPES:
                raise ValueError(f"{path}: {name}: unsupported dtype {dt}")
            npdt, size = _ST_DTYPES[dt]
            shape = [int(s) for s in info["shape"]]
            b, e = (int(x) for x in info["data_offsets"])
            count = int(np.prod(shape)) if shape else 1
            if e - b != count * size or base + e > len(mm):
                raise ValueError(f"{path}: {name}: bad data_offsets {b}..{e} for {dt}{shape}")
            arr = np.frombuffer(mm, dtype=npdt, count=count, offset=base + b).reshape(shape)
            if dt == "BF16":
                arr = bf16_to_f32(arr)
            elif dt in ("F16", "F64"):
                arr = arr.astype(np.float32)
            else:
                arr = arr.copy()
            out[name] = arr
    finally:
        # arrays were all copied / converted, nothing points into the map
        mm.close()
    return out


def write_safetensors(path, tensors, dtype="F32"):
    """tensors: {name: float32 ndarray}; stored as dtype (F32, F16 or BF16)."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if dtype == "F32":
            raw = arr.tobytes()
        elif dtype == "F16":
            raw = arr.astype(np.float16).tobytes()
        else:
            raw = f32_to_bf16(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for raw in blobs:
            f.write(raw)


def load_model_tensors(model_dir):
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        out = {}
        for s in shards:
            out.update(read_safetensors(os.path.join(model_dir, s)))
        return out
    raise FileNotFoundError(f"{model_dir}: no model.safetensors (or model.safetensors.index.json)")


# ---------------------------------------------------------------------------
# BERT from the math.

ACTS = {
    "gelu": lambda x: F.gelu(x),                                   # erf form
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class EncoderLayer(torch.nn.Module):
    """Post-LN BERT layer: x = LN(x + Attn(x)); x = LN(x + W2 act(W1 x))."""

    def __init__(self, hidden, heads, ffn, eps=1e-12, act="gelu"):
        super().__init__()
        if hidden % heads:
            raise ValueError("hidden not divisible by heads")
        self.hidden, self.heads, self.head_dim, self.eps = hidden, heads, hidden // heads, eps
        self.act = ACTS[act]
        P = lambda *s: torch.nn.Parameter(torch.zeros(*s), requires_grad=False)  # noqa: E731
        self.q_w, self.q_b = P(hidden, hidden), P(hidden)
        self.k_w, self.k_b = P(hidden, hidden), P(hidden)
        self.v_w, self.v_b = P(hidden, hidden), P(hidden)
        self.o_w, self.o_b = P(hidden, hidden), P(hidden)
        self.ln1_w, self.ln1_b = P(hidden), P(hidden)
        self.i_w, self.i_b = P(ffn, hidden), P(ffn)
        self.f_w, self.f_b = P(hidden, ffn), P(hidden)
        self.ln2_w, self.ln2_b = P(hidden), P(hidden)

    def forward(self, x, add_mask=None):
        # x [B, S, H]; add_mask None or [B, 1, 1, S] (0 keep, very negative drop)
        B, S = x.shape[0], x.shape[1]
        nh, hd = self.heads, self.head_dim
        q = F.linear(x, self.q_w, self.q_b).view(B, S, nh, hd).transpose(1, 2)   # [B, nh, S, hd]
        k = F.linear(x, self.k_w, self.k_b).view(B, S, nh, hd).transpose(1, 2)
        v = F.linear(x, self.v_w, self.v_b).view(B, S, nh, hd).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))     # [B, nh, S, S]
        if add_mask is not None:
            scores = scores + add_mask
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(B, S, self.hidden)
        x = F.layer_norm(x + F.linear(ctx, self.o_w, self.o_b), (self.hidden,), self.ln1_w, self.ln1_b, self.eps)
        h = self.act(F.linear(x, self.i_w, self.i_b))
        return F.layer_norm(x + F.linear(h, self.f_w, self.f_b), (self.hidden,), self.ln2_w, self.ln2_b, self.eps)

    def randomize(self, gen, std=0.02):
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("ln"):
                    p.fill_(1.0 if name.endswith("_w") else 0.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
        return self


# HF names of one layer's tensors, relative to "...encoder.layer.N."
_LAYER_NAMES = {
    "q_w": "attention.self.query.weight", "q_b": "attention.self.query.bias",
    "k_w": "attention.self.key.weight", "k_b": "attention.self.key.bias",
    "v_w": "attention.self.value.weight", "v_b": "attention.self.value.bias",
    "o_w": "attention.output.dense.weight", "o_b": "attention.output.dense.bias",
    "ln1_w": "attention.output.LayerNorm.weight", "ln1_b": "attention.output.LayerNorm.bias",
    "i_w": "intermediate.dense.weight", "i_b": "intermediate.dense.bias",
    "f_w": "output.dense.weight", "f_b": "output.dense.bias",
    "ln2_w": "output.LayerNorm.weight", "ln2_b": "output.LayerNorm.bias",
}


class BertClassifier(torch.nn.Module):
    """BertForSequenceClassification forward: embeddings (word + position + token
    type 0, LayerNorm) -> N post-LN layers with the padding mask -> pooler
    (tanh(W h[CLS] + b)) -> classifier. Outputs logits; without classifier
    weights, the pooled vector; without a pooler, h[CLS]."""

    def __init__(self, cfg, tensors):
        super().__init__()
        self.cfg = cfg
        H = cfg["hidden_size"]
        self.hidden, self.eps = H, float(cfg.get("layer_norm_eps", 1e-12))
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        act = cfg.get("hidden_act", "gelu")
        if act not in ACTS:
            raise ValueError(f"unsupported hidden_act {act}")
        names = set(tensors)
        prefix = "bert." if any(n.startswith("bert.") for n in names) else ""

        def get(name, required=True):
            for cand in (prefix + name, name):
                if cand in tensors:
                    return torch.from_numpy(np.ascontiguousarray(tensors[cand], dtype=np.float32))
                # old TF-converted checkpoints
                for a, b in ((".weight", ".gamma"), (".bias", ".beta")):
                    if "LayerNorm" in cand and cand.endswith(a) and cand[:-len(a)] + b in tensors:
                        return torch.from_numpy(np.ascontiguousarray(tensors[cand[:-len(a)] + b], dtype=np.float32))
            if required:
                raise KeyError(f"missing tensor {prefix}{name}")
            return None

        B = lambda t: torch.nn.Parameter(t, requires_grad=False)  # noqa: E731
        self.word = B(get("embeddings.word_embeddings.weight"))
        self.pos = B(get("embeddings.position_embeddings.weight"))
        tt = get("embeddings.token_type_embeddings.weight", required=False)
        self.type0 = B(tt[0].clone() if tt is not None else torch.zeros(H))
        self.emb_ln_w = B(get("embeddings.LayerNorm.weight"))
        self.emb_ln_b = B(get("embeddings.LayerNorm.bias"))
        self.register_buffer("position_ids", torch.arange(self.pos.shape[0]).unsqueeze(0), persistent=False)
        self.layers = torch.nn.ModuleList()
        for i in range(cfg["num_hidden_layers"]):
            lay = EncoderLayer(H, cfg["num_attention_heads"], cfg["intermediate_size"], self.eps, act)
            with torch.no_grad():
                for ours, hf in _LAYER_NAMES.items():
                    t = get(f"encoder.layer.{i}.{hf}")
                    getattr(lay, ours).copy_(t.reshape(getattr(lay, ours).shape))
            self.layers.append(lay)
        pw, pb = get("pooler.dense.weight", False), get("pooler.dense.bias", False)
        self.pool_w = B(pw) if pw is not None else None
        self.pool_b = B(pb) if pb is not None else None
        cw = tensors.get("classifier.weight")
        cb = tensors.get("classifier.bias")
        self.cls_w = B(torch.from_numpy(cw.astype(np.float32))) if cw is not None else None
        self.cls_b = B(torch.from_numpy(cb.astype(np.float32))) if cb is not None else None
        if self.cls_w is not None and self.pool_w is None:
            raise ValueError("classifier without pooler is not BertForSequenceClassification")
        self.output_kind = "logits" if self.cls_w is not None else ("pooled" if self.pool_w is not None else "cls_hidden")

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        x = F.embedding(input_ids, self.word) + F.embedding(self.position_ids[:, :S], self.pos) + self.type0
        x = F.layer_norm(x, (self.hidden,), self.emb_ln_w, self.emb_ln_b, self.eps)
        add_mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        for lay in self.layers:
            x = lay(x, add_mask)
        h = x[:, 0]
        if self.pool_w is None:
            return h
        h = torch.tanh(F.linear(h, self.pool_w, self.pool_b))
        if self.cls_w is None:
            return h
        return F.linear(h, self.cls_w, self.cls_b)


def chunks_of(seqs, b):
    b = len(seqs) if b <= 0 else b
    return [seqs[i:i + b] for i in range(0, len(seqs), b)]


def pad_chunk(chunk, pad_id):
    L = max(len(s) for s in chunk)
    ids = np.full((len(chunk), L), pad_id, dtype=np.int64)
    mask = np.zeros((len(chunk), L), dtype=np.int64)
    for r, s in enumerate(chunk):
        ids[r, :len(s)] = s
        mask[r, :len(s)] = 1
    return ids, mask


# ---------------------------------------------------------------------------
# timing

def stats_ms(samples_s):
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {"median_ms": float(np.median(a)), "min_ms": float(a.min()),
            "p10_ms": float(np.percentile(a, 10)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), "max_ms": float(a.max()), "repeats": int(a.size)}


def time_fn(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def max_errors(a, ref):
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    d = np.abs(a - ref)
    scale = float(np.abs(ref).max()) or 1.0
    return {"max_abs_err": float(d.max()), "max_rel_err": float(d.max() / scale)}


def save_f32(path, arr):
    np.ascontiguousarray(arr, dtype=np.float32).tofile(path)


def save_i64(path, arr):
    np.ascontiguousarray(arr, dtype=np.int64).tofile(path)


def pick_opset(requested):
    if requested:
        return requested
    try:
        from torch.onnx import _constants
        return min(17, int(getattr(_constants, "ONNX_MAX_OPSET", 13)))
    except Exception:
        return 13


def onnx_export(module, args, path, input_names, output_names, dynamic_axes, opset):
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(module, args, path, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------

def write_random_model(a):
    d = a.write_random_model
    os.makedirs(d, exist_ok=True)
    vocab_lines = None
    if a.random_vocab and os.path.exists(a.random_vocab):
        with open(a.random_vocab, encoding="utf-8") as f:
            vocab_lines = [ln.rstrip("\n") for ln in f]
        with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(vocab_lines) + "\n")
    V = len(vocab_lines) if vocab_lines else 30522
    H, L, I = a.random_hidden, a.random_layers, a.random_ffn
    cfg = {"architectures": ["BertForSequenceClassification"], "model_type": "bert",
           "hidden_size": H, "num_hidden_layers": L, "num_attention_heads": a.random_heads,
           "intermediate_size": I, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
           "max_position_embeddings": 512, "type_vocab_size": 2, "vocab_size": V, "pad_token_id": 0,
           "position_embedding_type": "absolute",
           "id2label": {str(i): f"LABEL_{i}" for i in range(a.random_labels)},
           "label2id": {f"LABEL_{i}": i for i in range(a.random_labels)},
           "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[a.random_dtype]}
    rng = np.random.default_rng(a.seed)
    r = lambda *s: (rng.standard_normal(s, dtype=np.float32) * 0.02)  # noqa: E731
    t = {"bert.embeddings.word_embeddings.weight": r(V, H),
         "bert.embeddings.position_embeddings.weight": r(512, H),
         "bert.embeddings.token_type_embeddings.weight": r(2, H),
         "bert.embeddings.LayerNorm.weight": 1 + r(H), "bert.embeddings.LayerNorm.bias": r(H)}
    shapes = {"q_w": (H, H), "k_w": (H, H), "v_w": (H, H), "o_w": (H, H), "i_w": (I, H), "f_w": (H, I),
              "q_b": (H,), "k_b": (H,), "v_b": (H,), "o_b": (H,), "i_b": (I,), "f_b": (H,),
              "ln1_w": (H,), "ln1_b": (H,), "ln2_w": (H,), "ln2_b": (H,)}
    for i in range(L):
        for ours, hf in _LAYER_NAMES.items():
            v = r(*shapes[ours])
            t[f"bert.encoder.layer.{i}.{hf}"] = (1 + v) if ours.endswith("_w") and ours.startswith("ln") else v
    t["bert.pooler.dense.weight"], t["bert.pooler.dense.bias"] = r(H, H), r(H)
    t["classifier.weight"], t["classifier.bias"] = r(a.random_labels, H), r(a.random_labels)
    write_safetensors(os.path.join(d, "model.safetensors"), t, a.random_dtype)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(json.dumps({"wrote": d, "dtype": a.random_dtype, "layers": L, "hidden": H, "vocab": V}))


def main(a):
    if a.write_random_model:
        write_random_model(a)
        return 0
    if a.repeats < 20:
        print(f"bert_peer: warning: --repeats {a.repeats} < 20", file=sys.stderr)
    blas = set_threads(a.threads) if a.threads > 0 else openblas_info()[0]
    torch.manual_seed(a.seed)
    export = not a.no_export
    if export:
        os.makedirs(a.scratch, exist_ok=True)
    opset = pick_opset(a.opset)
    report = {
        "peer": "pytorch", "torch_version": torch.__version__, "numpy_version": np.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(), "openblas": blas,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
        "mkldnn_enabled": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "warmup": a.warmup, "repeats": a.repeats, "seed": a.seed, "cases": {}, "checks": {},
    }
    manifest = {"scratch": os.path.abspath(a.scratch), "opset": opset, "seed": a.seed, "layer": None, "model": None}
    if export:
        report["onnx_opset"] = opset

    # ---- layer ----------------------------------------------------------
    if a.layer_batches:
        gen = torch.Generator().manual_seed(a.seed)
        layer = EncoderLayer(768, 12, 3072, 1e-12, "gelu").randomize(gen).eval()
        mlayer = {"onnx": "layer.onnx", "hidden": 768, "heads": 12, "ffn": 3072, "seq": a.seq, "cases": []}
        if export:
            xs = torch.randn(2, 16, 768, generator=gen)
            dt = onnx_export(layer, (xs,), os.path.join(a.scratch, "layer.onnx"), ["hidden_states"], ["output"],
                             {"hidden_states": {0: "batch", 1: "sequence"}, "output": {0: "batch", 1: "sequence"}},
                             opset)
            report["layer_export_s"] = round(dt, 2)
        for b in a.layer_batches:
            name = f"layer/{b}/{a.seq}"
            x = torch.randn(b, a.seq, 768, generator=gen)
            with torch.inference_mode():
                ref = layer(x)
                if export:
                    save_f32(os.path.join(a.scratch, f"layer_b{b}_in.f32"), x.numpy())
                    save_f32(os.path.join(a.scratch, f"layer_b{b}_ref.f32"), ref.numpy())
                    mlayer["cases"].append({"name": name, "batch": b, "seq": a.seq, "input": f"layer_b{b}_in.f32",
                                            "ref": f"layer_b{b}_ref.f32", "shape": [b, a.seq, 768]})
                if not a.no_time:
                    st = stats_ms(time_fn(lambda: layer(x), a.warmup, a.repeats))
                    report["cases"][name] = st
                    print(f"torch {name}: median {st['median_ms']:.3f} ms  min {st['min_ms']:.3f}  "
                          f"p10-p90 {st['p10_ms']:.3f}-{st['p90_ms']:.3f}", file=sys.stderr)
        manifest["layer"] = mlayer

    # ---- whole model ----------------------------------------------------
    if a.model:
        if not a.ids:
            raise SystemExit("bert_peer: --model needs --ids (JSON list of input-id lists; run_peers.py makes one)")
        with open(os.path.join(a.model, "config.json")) as f:
            cfg = json.load(f)
        with open(a.ids) as f:
            seqs = [list(map(int, s)) for s in json.load(f)]
        if not seqs or any(len(s) == 0 for s in seqs):
            raise SystemExit("bert_peer: empty id list or empty sequence")
        t0 = time.perf_counter()
        tensors = load_model_tensors(a.model)
        model = BertClassifier(cfg, tensors).eval()
        dtypes = sorted({i["dtype"] for i in _peek_dtypes(a.model)})
        del tensors
        load_s = time.perf_counter() - t0
        maxpos = model.pos.shape[0]
        if max(len(s) for s in seqs) > maxpos:
            raise SystemExit(f"bert_peer: a sequence is longer than max_position_embeddings {maxpos}")
        pad_id = int(cfg.get("pad_token_id", 0) or 0)
        lens = [len(s) for s in seqs]
        report["model"] = {"dir": os.path.abspath(a.model), "layers": cfg["num_hidden_layers"],
                           "hidden": cfg["hidden_size"], "heads": cfg["num_attention_heads"],
                           "ffn": cfg["intermediate_size"], "act": cfg.get("hidden_act", "gelu"),
                           "storage_dtypes": dtypes, "output": model.output_kind, "load_s": round(load_s, 2),
                           "n_seqs": len(seqs), "tokens": sum(lens), "min_len": min(lens), "max_len": max(lens),
                           "pad_id": pad_id}
        mmodel = {"onnx": "model.onnx", "ids": "model_ids.json", "pad_id": pad_id, "output": model.output_kind,
                  "ref_b1": "model_ref_b1.f32", "n_seqs": len(seqs), "batches": a.model_batches}
        if export:
            with open(os.path.join(a.scratch, "model_ids.json"), "w") as f:
                json.dump(seqs, f)
            # a padded batch of 2 as the tracing example; batch and sequence are dynamic axes
            ex_ids, ex_mask = pad_chunk([seqs[0], seqs[0][:max(1, len(seqs[0]) // 2)]], pad_id)
            dt = onnx_export(model, (torch.from_numpy(ex_ids), torch.from_numpy(ex_mask)),
                             os.path.join(a.scratch, "model.onnx"), ["input_ids", "attention_mask"], ["output"],
                             {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                              "output": {0: "batch"}}, opset)
            report["model_export_s"] = round(dt, 2)
        with torch.inference_mode():
            # reference: every sequence alone (batch 1, no padding)
            ref = np.concatenate([model(*(torch.from_numpy(t) for t in pad_chunk([s], pad_id))).numpy()
                                  for s in seqs], axis=0)
            mmodel["out_dim"] = int(ref.shape[1])
            if export:
                save_f32(os.path.join(a.scratch, "model_ref_b1.f32"), ref)
            for b in a.model_batches:
                name = f"model/{b}"
                chunks = [tuple(torch.from_numpy(t) for t in pad_chunk(c, pad_id)) for c in chunks_of(seqs, b)]
                outs = np.concatenate([model(*c).numpy() for c in chunks], axis=0)
                report["checks"][f"torch {name} vs torch model/1 (padding mask)"] = max_errors(outs, ref)

                def run_all():
                    for c in chunks:
                        model(*c)
                if not a.no_time:
                    st = stats_ms(time_fn(run_all, a.warmup, a.repeats))
                    st["chunks"] = len(chunks)
                    st["padded_tokens"] = int(sum(c[0].numel() for c in chunks))
                    report["cases"][name] = st
                    print(f"torch {name}: median {st['median_ms']:.3f} ms  min {st['min_ms']:.3f}  "
                          f"p10-p90 {st['p10_ms']:.3f}-{st['p90_ms']:.3f}  ({len(chunks)} chunks)", file=sys.stderr)
        manifest["model"] = mmodel
        report["model"]["dir_config"] = {k: cfg.get(k) for k in ("max_position_embeddings", "vocab_size",
                                                                  "layer_norm_eps", "type_vocab_size")}

    if export:
        with open(os.path.join(a.scratch, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
        report["scratch"] = os.path.abspath(a.scratch)
    txt = json.dumps(report, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(txt + "\n")
    print(txt)
    return 0


def _peek_dtypes(model_dir):
    files = []
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        files = [single]
    else:
        with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
            files = [os.path.join(model_dir, s) for s in set(json.load(f)["weight_map"].values())]
    out = []
    for p in files:
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            h = json.loads(f.read(n))
        out += [v for k, v in h.items() if k != "__metadata__"]
    return out


if __name__ == "__main__":
    sys.exit(main(ARGS))
