#!/usr/bin/env python3
"""Independent float64 reference forward pass for BERT sequence classifiers.

Written from the math (no nn.TransformerEncoder, no Hugging Face code):
  x = LN(word_emb[id] + pos_emb[t] + type_emb[0])
  per layer:  q,k,v = x Wq^T + bq, ...;  per head softmax(q k^T / sqrt(d) + mask) v
              a = LN(x + ctx Wo^T + bo);  x = LN(a + GELU_erf(a Wi^T + bi) Wo2^T + bo2)
  pooled = tanh(x[CLS] Wp^T + bp);  logits = pooled Wc^T + bc
Padding positions get -inf added to the attention scores (keys only), so a padded
batch gives the same logits as running each sequence alone; this script checks that.

Weights are read from model.safetensors with the reader below (F32/F16/BF16 are
widened exactly to float64); HF BertForSequenceClassification parameter names.

Usage (CLINC150 fixture):
  /usr/bin/python3 tests/reference/bert_reference.py --model examples/models/clinc150-bert \
      --clinc /work/shared/data/clinc150/data_full.json --n 240 \
      --out tests/data/reference/clinc150-bert.json

Case order: the pool is CLINC150 `test` followed by `oos_test` (5500 utterances, file
order); every 20th one is taken (indices 0, 20, 40, ...: 225 in-scope + 50 oos), the
275 are shuffled with random.Random(0), and the first N are the cases. Batches: one
"spread" batch of 12 cases with very different lengths (the shortest, the longest and
10 at evenly spaced length quantiles), then all cases in consecutive chunks of 32.
"""

import argparse
import json
import math
import os
import random
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "bench", "fixtures"))
import bert_tokenizer  # noqa: E402


def read_safetensors(path):
    """name -> float64 torch tensor. Accepts F32, F16 and BF16 (and F64)."""
    with open(path, "rb") as f:
        buf = f.read()
    (hlen,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = buf[base + a:base + b]
        dt = info["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2")
        elif dt == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt == "F64":
            arr = np.frombuffer(raw, dtype="<f8")
        else:
            raise ValueError("%s: unsupported dtype %s" % (name, dt))
        n = int(np.prod(info["shape"])) if info["shape"] else 1
        if arr.size != n:
            raise ValueError("%s: %d values for shape %s" % (name, arr.size, info["shape"]))
        out[name] = torch.from_numpy(arr.astype(np.float64).reshape(info["shape"]))
    return out, header


class RefBert:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        self.w, header = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.dtypes = sorted({v["dtype"] for k, v in header.items() if k != "__metadata__"})
        c = self.cfg
        self.L = c["num_hidden_layers"]
        self.H = c["hidden_size"]
        self.nh = c["num_attention_heads"]
        self.eps = float(c.get("layer_norm_eps", 1e-12))
        assert c.get("hidden_act", "gelu") == "gelu"
        self.tok = bert_tokenizer.BertTokenizer(os.path.join(model_dir, "vocab.txt"))
        id2label = c.get("id2label") or {}
        self.labels = [id2label.get(str(i), str(i)) for i in range(len(id2label))]

    def p(self, name):
        return self.w[name]

    def ln(self, x, prefix):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + self.eps) * self.p(prefix + ".weight") + self.p(prefix + ".bias")

    def lin(self, x, prefix):
        return x @ self.p(prefix + ".weight").t() + self.p(prefix + ".bias")

    @torch.no_grad()
    def logits(self, batch_ids):
        """batch_ids: list of id lists (different lengths). Pads with 0 and masks."""
        B = len(batch_ids)
        T = max(len(s) for s in batch_ids)
        ids = torch.zeros(B, T, dtype=torch.long)
        valid = torch.zeros(B, T, dtype=torch.bool)
        for i, s in enumerate(batch_ids):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            valid[i, :len(s)] = True
        e = "bert.embeddings."
        x = (self.p(e + "word_embeddings.weight")[ids]
             + self.p(e + "position_embeddings.weight")[:T][None]
             + self.p(e + "token_type_embeddings.weight")[0][None, None])
        x = self.ln(x, e + "LayerNorm")
        d = self.H // self.nh
        neg = torch.zeros(B, 1, 1, T, dtype=torch.float64)
        neg[~valid[:, None, None, :]] = float("-inf")
        for l in range(self.L):
            pre = "bert.encoder.layer.%d." % l

            def heads(t):
                return t.view(B, T, self.nh, d).permute(0, 2, 1, 3)
            q = heads(self.lin(x, pre + "attention.self.query"))
            k = heads(self.lin(x, pre + "attention.self.key"))
            v = heads(self.lin(x, pre + "attention.self.value"))
            s = q @ k.transpose(-1, -2) / math.sqrt(d) + neg
            s = s - s.max(-1, keepdim=True).values
            pr = torch.exp(s)
            pr = pr / pr.sum(-1, keepdim=True)
            ctx = (pr @ v).permute(0, 2, 1, 3).reshape(B, T, self.H)
            a = self.ln(x + self.lin(ctx, pre + "attention.output.dense"), pre + "attention.output.LayerNorm")
            h = self.lin(a, pre + "intermediate.dense")
            h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
            x = self.ln(a + self.lin(h, pre + "output.dense"), pre + "output.LayerNorm")
        pooled = torch.tanh(self.lin(x[:, 0], "bert.pooler.dense"))
        return self.lin(pooled, "classifier")


def spread_batch(lengths, k=12):
    """Indices of k cases of very different lengths: shortest, longest, quantiles between."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    picks = []
    for j in range(k):
        idx = order[round(j * (len(order) - 1) / (k - 1))]
        if idx not in picks:
            picks.append(idx)
    return picks


def compute(ref, texts, batches, extra=None, check_single=True, max_len=None):
    """Tokenize, run every batch padded; check single-sequence runs agree. Returns cases."""
    ids = [ref.tok.encode(t, max_len) for t in texts]
    logits = [None] * len(texts)
    for b in batches:
        out = ref.logits([ids[i] for i in b])
        for r, i in enumerate(b):
            row = out[r]
            if logits[i] is not None:
                diff = (row - logits[i]).abs().max().item()
                assert diff <= 1e-9 * max(1.0, row.abs().max().item()), ("batch mismatch", i, diff)
            else:
                logits[i] = row
    for i in range(len(texts)):
        if logits[i] is None or check_single:
            single = ref.logits([ids[i]])[0]
            if logits[i] is not None:
                diff = (single - logits[i]).abs().max().item()
                assert diff <= 1e-9 * max(1.0, single.abs().max().item()), ("padding changes logits", i, diff)
            else:
                logits[i] = single
    cases = []
    for i, t in enumerate(texts):
        lg = logits[i].tolist()
        srt = sorted(lg, reverse=True)
        c = {"text": t, "ids": ids[i], "logits": lg, "argmax": int(np.argmax(lg))}
        if ref.labels:
            c["label"] = ref.labels[c["argmax"]]
        c["margin"] = srt[0] - srt[1] if len(srt) > 1 else None
        if extra:
            c.update(extra[i])
        cases.append(c)
    return cases


def write_json(path, obj):
    """Top level indented, one case / batch per line; logits with 10 significant digits."""
    def num(x):
        return float("%.10g" % x)
    lines = ["{"]
    keys = list(obj.keys())
    for k_i, k in enumerate(keys):
        v = obj[k]
        end = "," if k_i + 1 < len(keys) else ""
        if k == "cases":
            rows = []
            for c in v:
                c = dict(c)
                c["logits"] = [num(x) for x in c["logits"]]
                if c.get("margin") is not None:
                    c["margin"] = num(c["margin"])
                rows.append("  " + json.dumps(c, ensure_ascii=False, separators=(",", ":")))
            lines.append('  "cases": [\n' + ",\n".join(rows) + "\n  ]" + end)
        elif k == "batches":
            rows = ["  " + json.dumps(b) for b in v]
            lines.append('  "batches": [\n' + ",\n".join(rows) + "\n  ]" + end)
        else:
            lines.append("  %s: %s%s" % (json.dumps(k), json.dumps(v, ensure_ascii=False), end))
    lines.append("}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    json.loads(open(path, encoding="utf-8").read())


def clinc_cases(path, n, seed=0, step=20):
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    pool = d["test"] + d["oos_test"]
    picked = [(i, pool[i]) for i in range(0, len(pool), step)]
    random.Random(seed).shuffle(picked)
    picked = picked[:n]
    texts = [p[1][0] for p in picked]
    extra = [{"gold": p[1][1], "pool_index": p[0]} for p in picked]
    return texts, extra


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--clinc", required=True, help="CLINC150 data_full.json")
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ref = RefBert(a.model)
    texts, extra = clinc_cases(a.clinc, a.n, a.seed)
    lengths = [len(ref.tok.encode(t)) for t in texts]
    batches = [spread_batch(lengths, 12)] + [list(range(s, min(s + a.chunk, len(texts))))
                                            for s in range(0, len(texts), a.chunk)]
    cases = compute(ref, texts, batches, extra)
    model_rel = os.path.relpath(os.path.abspath(a.model), REPO)
    correct = sum(c["label"] == c["gold"] for c in cases)
    out = {
        "model": model_rel,
        "dtype_note": "weights stored as %s in model.safetensors, widened exactly to float64; every operation "
                      "computed in float64 by tests/reference/bert_reference.py (independent PyTorch "
                      "implementation from the math); padded batches use an additive -inf key mask and were "
                      "checked to equal unpadded single-sequence runs" % "/".join(ref.dtypes),
        "source": "CLINC150 data_full.json test+oos_test (5500, file order), every 20th (indices 0,20,...), "
                  "shuffled with random.Random(%d), first %d; CC BY 3.0, Larson et al. 2019, clinc/oos-eval"
                  % (a.seed, a.n),
        "tokenizer": "bench/fixtures/bert_tokenizer.py with the model's vocab.txt: [CLS] pieces [SEP], no truncation",
        "compare": "per case: max|skim - ref| / max|ref| <= 1e-4 and identical argmax",
        "num_labels": len(cases[0]["logits"]),
        "cases": cases,
        "batches": batches,
        "reference_accuracy_on_cases": correct / len(cases),
    }
    write_json(a.out, out)
    lens = [len(cases[i]["ids"]) for i in batches[0]]
    print("wrote %s: %d cases, %d batches (spread batch lengths %s), min margin %.3g, accuracy on cases %.3f"
          % (a.out, len(cases), len(batches), lens, min(c["margin"] for c in cases), correct / len(cases)))


if __name__ == "__main__":
    main()
