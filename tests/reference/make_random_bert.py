#!/usr/bin/env python3
"""Write a randomly initialised BERT-base-shaped BertForSequenceClassification and its
float64 reference logits (for skim's tests; runs at test time).

  /usr/bin/python3 tests/reference/make_random_bert.py --out DIR --seed 0

DIR gets config.json (12 layers, hidden 768, 12 heads, FFN 3072, max positions 512,
3 labels), model.safetensors (F16, HF parameter names), vocab.txt (a copy of the
bert-base-uncased vocab, 30522 tokens) and reference.json (same format as
bert_reference.py's CLINC150 fixture: 12 texts, 2 mixed-length batches, the longest
text about 300 tokens).

Init: Linear/Embedding weights normal(0, 0.02) as in BERT; Linear biases normal(0, 0.02)
and LayerNorm weight 1 + normal(0, 0.05), bias normal(0, 0.02) (instead of exact 0/1) so
a test notices swapped or missing biases / LayerNorm parameters. The reference reads
the F16 file back with its own reader, so it sees exactly the stored values.
"""

import argparse
import json
import os
import shutil
import struct
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bert_reference  # noqa: E402

# The repo's own copy (tests/data/vocab/), so the test needs nothing outside the repo.
DEFAULT_VOCAB = os.path.join(HERE, "..", "data", "vocab", "bert-base-uncased-vocab.txt")

TEXTS = [
    # CLINC150-style requests (short)
    "what is my bank account balance",
    "set an alarm for 6:30 tomorrow morning",
    "how do you say thank you in japanese",
    "can you tell me a joke about cats?",
    "I need to book a table for four at an Italian restaurant tonight",
    "what's the weather going to be like in Paris this weekend",
    "remind me to call mom",
    "Is my flight to São Paulo still on time?",
    # medium, with accents and a CJK word
    "The café on the corner serves a naïve little crème brûlée that costs 4.50 euros; "
    "my friend from 東京 says it is the best dessert she has had in years, "
    "though she admits she has not tried many desserts since moving here last spring.",
    "hi",
]

LONG_A = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling after decades of salt wind. "
    "Every evening the keeper climbed the spiral stairs, counted the steps out of habit, and lit the lamp "
    "before the fishing boats came home. Nobody in the village remembered a night when the light had failed, "
    "and the children believed that the keeper never slept at all. In winter the storms rolled in from the "
    "north, rattling the windows of the small houses along the harbour, and the waves threw spray high over "
    "the rocks. On one such night a young sailor, lost and frightened, saw the beam sweep across the water "
    "and turned his boat toward it. He reached the harbour just before midnight, soaked and shivering, and "
    "the keeper brought him tea and a blanket. Years later, when the sailor had become a captain, he returned "
    "to the village with a gift: a brass bell, polished until it shone, which still hangs beside the door."
)

LONG_B = LONG_A + (
    " Visitors who ring it are told the story, and most of them laugh, but a few look out at the grey sea "
    "for a long time before they leave. The keeper is gone now, and the lamp is switched on by a timer, "
    "yet on stormy evenings some of the older fishermen still climb the hill to make sure it is burning, "
    "as if the light might need a person to keep it honest. They talk about the weather, about prices at "
    "the market, about their grandchildren who moved to the city, and then they walk back down in silence, "
    "satisfied, to their warm kitchens and their supper."
)

ALL_TEXTS = TEXTS + [LONG_A, LONG_B]
# batch 0: eight short requests, the medium text and "hi" (very different lengths)
# batch 1: a short request, the ~200-token and the ~300-token text
BATCHES = [[0, 1, 2, 3, 4, 5, 6, 8, 9], [7, 10, 11]]


def write_safetensors_f16(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        raw = t.numpy().astype("<f2").tobytes()
        header[name] = {"dtype": "F16", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def make_weights(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    H, F_, V, P = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["max_position_embeddings"]

    def normal(*shape, std=0.02, mean=0.0):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std + mean

    w = {}
    e = "bert.embeddings."
    w[e + "word_embeddings.weight"] = normal(V, H)
    w[e + "position_embeddings.weight"] = normal(P, H)
    w[e + "token_type_embeddings.weight"] = normal(cfg["type_vocab_size"], H)

    def ln(prefix):
        w[prefix + ".weight"] = normal(H, std=0.05, mean=1.0)
        w[prefix + ".bias"] = normal(H)

    def lin(prefix, n_out, n_in):
        w[prefix + ".weight"] = normal(n_out, n_in)
        w[prefix + ".bias"] = normal(n_out)

    ln(e + "LayerNorm")
    for l in range(cfg["num_hidden_layers"]):
        p = "bert.encoder.layer.%d." % l
        lin(p + "attention.self.query", H, H)
        lin(p + "attention.self.key", H, H)
        lin(p + "attention.self.value", H, H)
        lin(p + "attention.output.dense", H, H)
        ln(p + "attention.output.LayerNorm")
        lin(p + "intermediate.dense", F_, H)
        lin(p + "output.dense", H, F_)
        ln(p + "output.LayerNorm")
    lin("bert.pooler.dense", H, H)
    lin("classifier", cfg["num_labels"], H)
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", default=DEFAULT_VOCAB)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    t0 = time.time()
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    with open(a.vocab, encoding="utf-8") as f:
        nv = sum(1 for _ in f)
    labels = ["negative", "neutral", "positive"]
    cfg = {
        "architectures": ["BertForSequenceClassification"], "model_type": "bert",
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "num_attention_heads": 12, "num_hidden_layers": 12,
        "pad_token_id": 0, "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": nv,
        "id2label": {str(i): l for i, l in enumerate(labels)}, "label2id": {l: i for i, l in enumerate(labels)},
        "num_labels": 3, "classifier_dropout": None, "torch_dtype": "float16", "use_cache": True,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    shutil.copyfile(a.vocab, os.path.join(a.out, "vocab.txt"))
    write_safetensors_f16(os.path.join(a.out, "model.safetensors"), make_weights(cfg, a.seed))
    t1 = time.time()

    ref = bert_reference.RefBert(a.out)
    cases = bert_reference.compute(ref, ALL_TEXTS, BATCHES, check_single=False)
    out = {
        "model": "random BERT-base (tests/reference/make_random_bert.py --seed %d)" % a.seed,
        "dtype_note": "weights stored as F16 in model.safetensors, widened exactly to float64; every operation "
                      "computed in float64 by tests/reference/bert_reference.py; each case computed once, inside "
                      "its padded batch (additive -inf key mask)",
        "tokenizer": "bench/fixtures/bert_tokenizer.py with vocab.txt (bert-base-uncased): [CLS] pieces [SEP]",
        "compare": "per case: max|skim - ref| / max|ref| <= 1e-4 and identical argmax",
        "num_labels": 3,
        "cases": cases,
        "batches": BATCHES,
    }
    bert_reference.write_json(os.path.join(a.out, "reference.json"), out)
    lens = [len(c["ids"]) for c in cases]
    rel_margin = min(c["margin"] / max(abs(x) for x in c["logits"]) for c in cases)
    print("wrote %s: weights %.1fs, reference %.1fs; token lengths %s; min argmax margin %.3g (relative %.3g)"
          % (a.out, t1 - t0, time.time() - t1, lens, min(c["margin"] for c in cases), rel_margin))


if __name__ == "__main__":
    main()
