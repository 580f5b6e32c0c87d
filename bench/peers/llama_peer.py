#!/usr/bin/python3
"""PyTorch peer for skim's decoder benchmark: a fast LLaMA forward pass in plain torch ops.

Written from the math (same as tests/reference/llama_reference.py, but fp32 and cached):
  x = embed[ids]
  per layer:  h = RMSNorm(x) ; [q k v] = h [Wq;Wk;Wv]^T (one fused GEMM) ; RoPE(q), RoPE(k)
              K/V appended to a preallocated cache [layers, kv_heads, ctx, head_dim]
              grouped-query causal attention (query head h reads kv head h // (H/KVH))
              x += attn Wo^T
              h = RMSNorm(x) ; [g u] = h [W1;W3]^T (one fused GEMM) ; x += (silu(g) * u) W2^T
  logits = RMSNorm(x_last) Wcls^T          (only the last position: what generation needs)
  RMSNorm(x) = x * rsqrt(mean(x^2) + eps) * w
  RoPE: adjacent pairs (x[2i], x[2i+1]) rotated by pos * theta^(-2i/hd) -- the GGUF / llama.cpp /
        llama2.c convention -- done as one complex multiply; the 1/sqrt(hd) attention scale is
        folded into the query's rotation factors. (--rope halves for Hugging Face directories.)
Weights are read with the readers of tests/reference/llama_reference.py (GGUF F32/F16/BF16,
llama2.c .bin, HF safetensors), widened to fp32 torch tensors. --compute bf16 keeps the matrices
as torch.bfloat16 (exact for BF16 files; F16/F32 files are rounded) and runs the GEMMs in bf16
(oneDNN in this torch build) with fp32 activations in between: norms, RoPE, attention and the
residual stream stay fp32.

Single-token steps (decode) use torch.mv (BLAS gemv) in fp32: OpenBLAS's sgemm with M = 1 is
several times slower than its sgemv. In bf16 they use F.linear (oneDNN); --matvec overrides.

What it measures (torch.inference_mode, torch.set_num_threads(--threads) and OpenBLAS's own
thread pool set to the same number):
  check    greedy decoding from BOS on --check-model (default tests/data stories260K.gguf) for 256
           steps through the KV cache must equal the golden ids -> prints OK or FAIL (exit 1).
           Always fp32, whatever --compute says.
  verify   logits of the last position for --verify-tokens random ids on --model, against the
           float64 reference forward (max abs error, relative to max |logit|).
  prefill  one forward pass over --prefill-tokens ids (BOS, then uniform random ids from
           numpy seed --seed), KV cache reset each time, logits of the last position included.
           --warmup untimed passes, then --reps timed: median / min / p10 / p90 / mean ms, and the
           same divided by the layer count ("per layer": whole pass / layers, so embedding, final
           norm and classifier are spread over the layers).
  decode   prompt of --prompt-tokens ids (BOS + random, other seed), prefilled (not timed), then
           greedy generation of --decode-tokens tokens: the first comes from the prefill logits,
           each further one costs one single-token pass through the KV cache. tokens/s =
           (decode_tokens - 1) / time from the end of prefill to the last argmax -- the same
           definition skim-generate --verbose uses. EOS is not a stop here (always the full
           count). One untimed warm-up generation, then --decode-reps timed; median / min / max.

Usage (Debian's python3, which has torch):
  /usr/bin/python3 bench/peers/llama_peer.py --model /tmp/skim-decoder-bench/random-gpt2small-f32.gguf \\
      --threads 2 --json /tmp/peer.json
  /usr/bin/python3 bench/peers/llama_peer.py --model X-bf16.gguf --compute bf16 --threads 2
  /usr/bin/python3 bench/peers/llama_peer.py --check-only            # just the stories260K check
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
STORIES = os.path.join(ROOT, "tests", "data", "models", "stories260K")
BOS_ID = 1


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF file, llama2.c .bin or HF directory to benchmark")
    ap.add_argument("--threads", type=int, default=2, help="torch + OpenBLAS threads (default 2)")
    ap.add_argument("--compute", choices=["fp32", "bf16"], default="fp32",
                    help="fp32 (default), or bf16 weights/GEMMs (see docstring)")
    ap.add_argument("--rope", choices=["adjacent", "halves"],
                    help="RoPE pairing (default: adjacent for GGUF/.bin, halves for HF)")
    ap.add_argument("--matvec", choices=["auto", "mv", "linear"], default="auto",
                    help="single-token GEMV: torch.mv or F.linear (auto: mv for fp32, linear for bf16)")
    ap.add_argument("--prefill-tokens", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3, help="untimed prefill passes (default 3)")
    ap.add_argument("--reps", type=int, default=10, help="timed prefill passes (default 10)")
    ap.add_argument("--prompt-tokens", type=int, default=16, help="decode prompt length (default 16)")
    ap.add_argument("--decode-tokens", type=int, default=64, help="tokens generated (default 64)")
    ap.add_argument("--decode-reps", type=int, default=5, help="timed generations (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random prompt ids")
    ap.add_argument("--verify-tokens", type=int, default=8,
                    help="ids for the float64 cross-check of --model (0 = skip)")
    ap.add_argument("--check-model", default=os.path.join(STORIES, "stories260K.gguf"))
    ap.add_argument("--check-expect", default=os.path.join(STORIES, "expected_greedy_from_bos_256.ids.txt"))
    ap.add_argument("--no-check", action="store_true", help="skip the stories260K greedy check")
    ap.add_argument("--check-only", action="store_true", help="only the greedy check")
    ap.add_argument("--omp-wait-policy", choices=["passive", "active", "default"], default="passive",
                    help="OMP_WAIT_POLICY for torch's OpenMP pool (default passive; an exported "
                         "OMP_WAIT_POLICY wins). Active spinning OpenMP workers fight OpenBLAS's "
                         "pthreads for the cores and slow every op several-fold")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if not a.model and not a.check_only:
        ap.error("--model is required (or --check-only)")
    return a


ARGS = parse_args()
# Before torch is imported: OpenBLAS and OpenMP read these at load time. A value the caller
# exported wins; the thread counts are also set at run time below.
os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(ARGS.threads))
if ARGS.omp_wait_policy != "default":
    os.environ.setdefault("OMP_WAIT_POLICY", ARGS.omp_wait_policy)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from blas_env import openblas_info, set_threads  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import llama_reference as ref  # noqa: E402


# ----------------------------------------------------------------------------- model

class TorchLlama:
    """fp32 (or bf16-GEMM) LLaMA with a preallocated KV cache. forward(ids) appends ids at the
    current position and returns the last position's logits (fp32, [vocab])."""

    def __init__(self, model, compute="fp32", rope="adjacent", max_ctx=None, matvec="auto"):
        c = model.cfg
        self.cfg = c
        self.L, self.H, self.KVH, self.hd = c["n_layers"], c["n_heads"], c["n_kv_heads"], c["head_dim"]
        self.D, self.FF, self.vocab, self.eps = c["dim"], c["hidden"], c["vocab"], float(c["eps"])
        self.group = self.H // self.KVH
        self.ctx = int(max_ctx or c.get("seq_len") or 2048)
        self.compute = compute
        self.wdt = torch.bfloat16 if compute == "bf16" else torch.float32
        if matvec == "auto":
            matvec = "linear" if compute == "bf16" else "mv"
        self.matvec = matvec
        w = model.w

        def f32(name):
            return torch.from_numpy(np.array(w[name], dtype=np.float32, copy=True))

        def mat(*names):
            t = torch.cat([f32(n) for n in names], 0) if len(names) > 1 else f32(names[0])
            return t.to(self.wdt).contiguous()

        self.embed = f32("embed")                                   # gather stays fp32
        self.layers = []
        for i in range(self.L):
            p = f"layers.{i}."
            self.layers.append({
                "attn_norm": f32(p + "attn_norm"), "ffn_norm": f32(p + "ffn_norm"),
                "wqkv": mat(p + "wq", p + "wk", p + "wv"), "wo": mat(p + "wo"),
                "w13": mat(p + "w1", p + "w3"), "w2": mat(p + "w2"),
            })
        self.norm = f32("norm")
        self.cls = mat("cls")

        # RoPE factors, complex64 [ctx, H + KVH, hd/2]; query heads carry the 1/sqrt(hd) scale.
        half = self.hd // 2
        i = torch.arange(half, dtype=torch.float64)
        inv = float(c["theta"]) ** (-2.0 * i / self.hd)
        ang = torch.arange(self.ctx, dtype=torch.float64)[:, None] * inv[None, :]
        rot = torch.polar(torch.ones_like(ang), ang)                # complex128 [ctx, half]
        scale = torch.ones(self.H + self.KVH, dtype=torch.float64)
        scale[:self.H] = self.hd ** -0.5
        self.rot = (rot[:, None, :] * scale[None, :, None]).to(torch.complex64).contiguous()
        self.rope = rope
        self.k_cache = torch.zeros(self.L, self.KVH, self.ctx, self.hd)
        self.v_cache = torch.zeros(self.L, self.KVH, self.ctx, self.hd)
        self.pos = 0

    def reset(self):
        self.pos = 0

    def lin(self, x, wt):
        """x [T, in] fp32 -> x wt^T [T, out] fp32."""
        if x.shape[0] == 1 and self.matvec == "mv":
            return torch.mv(wt, x[0].to(wt.dtype)).float().unsqueeze(0)
        if wt.dtype == torch.float32:
            return F.linear(x, wt)
        return F.linear(x.to(wt.dtype), wt).float()

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def apply_rope(self, qk, p0, T):
        """qk: [T, H+KVH, hd] (a view is fine) -> rotated, contiguous."""
        n = self.H + self.KVH
        if self.rope == "adjacent":
            z = torch.view_as_complex(qk.reshape(T, n, self.hd // 2, 2))
            return torch.view_as_real(z * self.rot[p0:p0 + T]).reshape(T, n, self.hd)
        half = self.hd // 2                                     # halves: (x[i], x[i + hd/2])
        qk = qk.reshape(T, n, 2, half).transpose(2, 3)
        z = torch.view_as_complex(qk.contiguous())
        return torch.view_as_real(z * self.rot[p0:p0 + T]).transpose(2, 3).reshape(T, n, self.hd)

    def forward(self, ids):
        T, p0 = len(ids), self.pos
        S = p0 + T
        if S > self.ctx:
            raise ValueError(f"context {self.ctx} exceeded")
        H, KVH, hd, g = self.H, self.KVH, self.hd, self.group
        x = self.embed[ids]                                     # [T, D] fp32 (new tensor)
        mask = None
        if T > 1:
            qpos = torch.arange(p0, S)[:, None]
            kpos = torch.arange(S)[None, :]
            mask = torch.zeros(T, S).masked_fill_(kpos > qpos, float("-inf"))
            mask = mask.repeat(g, 1) if g > 1 else mask         # rows ordered (group, t)
        nqk = (H + KVH) * hd
        for l, lw in enumerate(self.layers):
            h = self.rms(x, lw["attn_norm"])
            qkv = self.lin(h, lw["wqkv"])                       # [T, (H + 2 KVH) hd]
            qk = self.apply_rope(qkv[:, :nqk].view(T, H + KVH, hd), p0, T)
            kc, vc = self.k_cache[l], self.v_cache[l]           # [KVH, ctx, hd]
            kc[:, p0:S].copy_(qk[:, H:].transpose(0, 1))
            vc[:, p0:S].copy_(qkv[:, nqk:].view(T, KVH, hd).transpose(0, 1))
            # query rows grouped per kv head: [KVH, g * T, hd], row index = (group, t)
            if T == 1:
                q = qk[0, :H].view(KVH, g, hd)
            else:
                q = qk[:, :H].reshape(T, KVH, g, hd).permute(1, 2, 0, 3).reshape(KVH, g * T, hd)
            K, V = kc[:, :S], vc[:, :S]
            if mask is None:
                s = torch.bmm(q, K.transpose(1, 2))
            else:
                s = torch.baddbmm(mask, q, K.transpose(1, 2))
            a = torch.softmax(s, dim=-1)
            o = torch.bmm(a, V)                                 # [KVH, g * T, hd]
            if T == 1:
                o = o.reshape(1, H * hd)
            else:
                o = o.view(KVH, g, T, hd).permute(2, 0, 1, 3).reshape(T, H * hd)
            x.add_(self.lin(o, lw["wo"]))
            h = self.rms(x, lw["ffn_norm"])
            gu = self.lin(h, lw["w13"])                         # [T, 2 FF]
            x.add_(self.lin(F.silu(gu[:, :self.FF]) * gu[:, self.FF:], lw["w2"]))
        self.pos = S
        h = self.rms(x[-1:], self.norm)
        return self.lin(h, self.cls)[0]


def greedy(m, prompt, n):
    """Greedy tokens after prompt (list of ids); EOS is not a stop."""
    m.reset()
    logits = m.forward(torch.tensor(prompt, dtype=torch.long))
    out = []
    for t in range(n):
        nxt = int(torch.argmax(logits))
        out.append(nxt)
        if t + 1 < n:
            logits = m.forward(torch.tensor([nxt], dtype=torch.long))
    return out


# ----------------------------------------------------------------------------- measurements

def stats(xs):
    a = np.asarray(xs, dtype=np.float64)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90)),
            "mean": float(a.mean()), "n": int(a.size), "samples": [float(v) for v in a]}


def random_prompt(n, vocab, seed):
    rng = np.random.default_rng(seed)
    hi = vocab
    lo = 3 if vocab > 3 else 0                                  # skip <unk> <s> </s>
    return [BOS_ID] + rng.integers(lo, hi, size=n - 1).tolist()


def run_check(a):
    t0 = time.time()
    model = ref.load_model(a.check_model)
    with open(a.check_expect) as f:
        exp = [int(v) for v in f.read().split()]
    m = TorchLlama(model, "fp32", a.rope or model.cfg["rope"], max_ctx=len(exp) + 2)
    out = greedy(m, [BOS_ID], len(exp))
    bad = next((i for i in range(len(exp)) if out[i] != exp[i]), None)
    ok = bad is None
    res = {"model": a.check_model, "expect": a.check_expect, "steps": len(exp), "ok": ok,
           "first_mismatch": bad, "seconds": time.time() - t0}
    print(f"check: greedy {len(exp)} steps from BOS on {os.path.basename(a.check_model)}: "
          + ("OK" if ok else f"FAIL (first difference at step {bad}: {out[bad]} vs {exp[bad]})"),
          flush=True)
    return res


def run_verify(a, model, m, rope):
    ids = random_prompt(a.verify_tokens, model.cfg["vocab"], a.seed + 2)
    m.reset()
    got = m.forward(torch.tensor(ids, dtype=torch.long)).double()
    want = ref.forward(model, ids, rope)[-1]
    err = float((got - want).abs().max())
    scale = float(want.abs().max()) or 1.0
    res = {"tokens": len(ids), "max_abs_err": err, "max_rel_err": err / scale,
           "argmax_equal": int(got.argmax()) == int(want.argmax())}
    print(f"verify: {len(ids)} ids vs float64 reference: max abs err {err:.3g} "
          f"(rel {err / scale:.3g}), argmax {'equal' if res['argmax_equal'] else 'DIFFERENT'}",
          flush=True)
    return res


def run_prefill(a, m):
    ids = torch.tensor(random_prompt(a.prefill_tokens, m.vocab, a.seed), dtype=torch.long)
    for _ in range(a.warmup):
        m.reset()
        m.forward(ids)
    ts = []
    for _ in range(a.reps):
        m.reset()
        t0 = time.perf_counter()
        m.forward(ids)
        ts.append((time.perf_counter() - t0) * 1e3)
    ms = stats(ts)
    per_layer = {k: (v / m.L if k not in ("n", "samples") else v) for k, v in ms.items()}
    per_layer["samples"] = [v / m.L for v in ms["samples"]]
    print(f"prefill {a.prefill_tokens} tokens: median {ms['median']:.2f} ms (min {ms['min']:.2f}, "
          f"p10 {ms['p10']:.2f}, p90 {ms['p90']:.2f}; {a.reps} reps) = {per_layer['median']:.3f} ms "
          f"per layer", flush=True)
    return {"tokens": a.prefill_tokens, "warmup": a.warmup, "reps": a.reps, "ms": ms,
            "ms_per_layer": per_layer, "layers": m.L}


def run_decode(a, m):
    prompt = random_prompt(a.prompt_tokens, m.vocab, a.seed + 1)
    n = a.decode_tokens
    tps = []
    for r in range(a.decode_reps + 1):                          # first one is the warm-up
        m.reset()
        logits = m.forward(torch.tensor(prompt, dtype=torch.long))
        t0 = time.perf_counter()
        nxt = int(torch.argmax(logits))
        for _ in range(n - 1):
            logits = m.forward(torch.tensor([nxt], dtype=torch.long))
            nxt = int(torch.argmax(logits))
        dt = time.perf_counter() - t0
        if r:
            tps.append((n - 1) / dt)
    s = stats(tps)
    print(f"decode {n} tokens after a {a.prompt_tokens}-token prompt: median {s['median']:.1f} "
          f"tokens/s (min {s['min']:.1f}, max {s['max']:.1f}; {a.decode_reps} reps)", flush=True)
    return {"prompt_tokens": a.prompt_tokens, "tokens": n, "steps_timed": n - 1,
            "reps": a.decode_reps, "tokens_per_s": s}


def main():
    a = ARGS
    blas = set_threads(a.threads)
    torch.manual_seed(0)
    res = {"peer": "pytorch", "torch": torch.__version__, "threads": a.threads,
           "torch_threads": torch.get_num_threads(), "compute": a.compute,
           "mkldnn": torch.backends.mkldnn.is_available(), "openblas": blas,
           "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS",
                                                   "OMP_NUM_THREADS", "OMP_WAIT_POLICY")}}
    status = 0
    with torch.inference_mode():
        if not a.no_check:
            res["check"] = run_check(a)
            status |= 0 if res["check"]["ok"] else 1
        if not a.check_only:
            t0 = time.time()
            model = ref.load_model(a.model)
            c = model.cfg
            rope = a.rope or c["rope"]
            need = max(a.prefill_tokens, a.prompt_tokens + a.decode_tokens, a.verify_tokens) + 1
            ctx = min(int(c.get("seq_len") or need), need)
            m = TorchLlama(model, a.compute, rope, max_ctx=ctx, matvec=a.matvec)
            types = sorted(set(c["gguf"]["types"].values())) if c.get("format") == "gguf" else None
            res["model"] = {"path": a.model, "format": c["format"], "tensor_types": types,
                            "dim": c["dim"], "hidden": c["hidden"], "layers": c["n_layers"],
                            "heads": c["n_heads"], "kv_heads": c["n_kv_heads"],
                            "vocab": c["vocab"], "params": model.n_params(), "rope": rope,
                            "load_seconds": time.time() - t0}
            res["matvec"] = m.matvec
            print(f"model {a.model}: {c['n_layers']} layers, dim {c['dim']}, heads "
                  f"{c['n_heads']}/{c['n_kv_heads']}, ffn {c['hidden']}, vocab {c['vocab']}, "
                  f"types {types}; compute {a.compute}, threads {a.threads}, matvec {m.matvec}",
                  flush=True)
            if a.verify_tokens > 0:
                res["verify"] = run_verify(a, model, m, rope)
            del model                                           # the numpy views / mmap
            res["prefill"] = run_prefill(a, m)
            res["decode"] = run_decode(a, m)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
