#!/usr/bin/python3
"""Driver for skim's decoder benchmark: skim-generate against the PyTorch peer (llama_peer.py) and,
optionally, llama.cpp's llama-bench.

For every model (default: tests/data stories260K.gguf, and random GPT-2-small-shaped LLaMA GGUFs
at f32 and bf16 written into --scratch by bench/fixtures/make_random_llama_gguf.py if missing),
one after another, never concurrently:
  skim     build/examples/skim-generate/skim-generate, one process per sample, --verbose parsed:
             prefill  --prompt TEXT128 --max-tokens 1   -> "prefill P tokens in X ms"
                      TEXT128 is calibrated once per model (cached in SCRATCH/prompts.json) so that
                      skim's tokenizer gives exactly --prefill-tokens ids, BOS included
             decode   --prompt TEXT16 --max-tokens 64   -> "decode Y tokens/s" = 63 / time of the
                      63 single-token steps (TEXT16 = --prompt-tokens ids; a text is chosen for which
                      greedy generation does not stop at EOS before 64 tokens)
           --reps samples each (plus one untimed warm-up run), median and spread.
  pytorch  llama_peer.py on the same file, same --threads, prefill/prompt length = the counts skim
           reported. It reads F32/F16/BF16 matrices only: skipped (with a note) for Q8_0 files.
  llama.cpp  with --llama-bench PATH, for GGUF files only (others skipped with a note):
           PATH -m FILE -t THREADS -p PREFILL -n DECODE -r REPS -o json, one process per model;
           prefill = its pp test (PREFILL random ids, BOS first, into an empty cache), decode = its
           tg test (DECODE single-token steps from an empty cache, tok/s = DECODE / their time);
           avg and stddev as llama-bench reports them (one warm-up run of each, then REPS).
Variants: fp32 (skim-generate as is; the peer in fp32) and, for files whose matrices are BF16
(--bf16 auto), bf16 (skim-generate --bf16, which packs GEMM weights as bf16; the peer with
--compute bf16). Each row of the tables pairs skim and PyTorch of the same variant.
           Its correctness check (greedy 256 from BOS on stories260K = golden ids) runs once first;
           skim gets the same check (skim-generate --max-tokens 256 --ids from BOS).
Ratios are skim / pytorch: prefill time skim_ms / torch_ms (below 1 = skim faster), decode
throughput skim_tps / torch_tps (above 1 = skim faster); skim / llama.cpp likewise, prefill as
ms per layer (skim median / llama.cpp avg). Without --llama-bench, the llama.cpp column holds fixed
figures measured earlier on this machine kind (random GPT-2-small model, 2 threads), not run.

  /usr/bin/python3 bench/peers/run_decoder_bench.py [--threads 2] [--reps 5] [--out report.json]
  /usr/bin/python3 bench/peers/run_decoder_bench.py --models stories260K,gpt2small-f32 --reps 2
  /usr/bin/python3 bench/peers/run_decoder_bench.py --models mine=/path/model.gguf
  /usr/bin/python3 bench/peers/run_decoder_bench.py --models gpt2small-f32,gpt2small-q8_0 \
      --llama-bench /work/peers/llama.cpp/build/bin/llama-bench

Model names: stories260K, gpt2small-f32, gpt2small-bf16, gpt2small-f16, gpt2small-q8_0 (generated
if missing, seed --seed), or NAME=PATH / PATH for any GGUF, llama2.c .bin (tokenizer beside it) or HF dir.
See bench/peers/DECODER.md.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PEER = os.path.join(HERE, "llama_peer.py")
MAKE_GGUF = os.path.join(REPO, "bench", "fixtures", "make_random_llama_gguf.py")
STORIES = os.path.join(REPO, "tests", "data", "models", "stories260K")
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# llama.cpp on this machine kind, random GPT-2-small LLaMA GGUF, 2 threads (not run here).
LLAMACPP_REF = {
    "f32": {"decode_tps": 95.0, "prefill_ms_per_layer": 9.6},
    "bf16": {"decode_tps": 177.0, "prefill_ms_per_layer": None},
    "q8_0": {"decode_tps": 174.0, "prefill_ms_per_layer": None},
}
LLAMACPP_NOTE = ("llama.cpp, measured earlier on this machine kind (not run here): random GPT-2-small "
                 "LLaMA GGUF, 2 threads: decode 95 tokens/s (F32), 177 (BF16), 174 (Q8_0); prefill "
                 "of 128 tokens ~9.6 ms per layer (F32)")

# Prompt material (plain English, written for this benchmark). The prefill text is a prefix of
# it; decode prompts start at sentence boundaries.
STORY = (
    "Once upon a time, a little fox lived at the edge of a quiet forest. Every morning he walked "
    "to the river to drink and to look at the fish. One day he saw a small boat stuck between two "
    "rocks. A girl sat in the boat and cried, because she could not move it. The fox wanted to help "
    "her. He pushed the boat with his nose, and then with his paws, but it did not move. Then a big "
    "bear came out of the trees. The bear was kind and strong. Together they pushed the boat, and "
    "it slid back into the water. The girl laughed and said thank you. She gave the fox an apple and "
    "the bear a jar of honey. From that day on, the three friends met at the river every morning. "
    "They played in the sun, they told stories, and they watched the fish jump over the stones. "
    "When winter came, the river froze, and the friends walked on the ice and made a snowman with a "
    "long carrot nose and two black buttons for eyes. ")
RANDOM_SHAPES = ("f32", "bf16", "f16", "q8_0")
PEER_TYPES = {"F32", "F16", "BF16"}   # tensor types llama_peer.py (llama_reference.py) reads
GGML_TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
                   10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="stories260K,gpt2small-f32,gpt2small-bf16",
                   help="comma-separated names or [NAME=]PATH (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="threads for skim and PyTorch (default 2)")
    p.add_argument("--reps", type=int, default=5,
                   help="skim processes per figure and PyTorch decode generations (default 5)")
    p.add_argument("--peer-prefill-reps", type=int, default=10, help="PyTorch timed prefills (default 10)")
    p.add_argument("--peer-warmup", type=int, default=3, help="PyTorch untimed prefills (default 3)")
    p.add_argument("--prefill-tokens", type=int, default=128)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="also run the bf16 variant (skim-generate --bf16, peer --compute bf16): "
                        "auto = for files with BF16 matrices (default)")
    p.add_argument("--skim-generate", default=os.path.join(REPO, "build", "examples", "skim-generate",
                                                           "skim-generate"))
    p.add_argument("--skim-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for skim-generate, repeatable (e.g. OMP_WAIT_POLICY=PASSIVE "
                        "on a loaded machine; see DECODER.md)")
    p.add_argument("--peer-arg", action="append", default=[], metavar="ARG",
                   help="extra llama_peer.py argument, repeatable (e.g. --peer-arg=--omp-wait-policy=active)")
    p.add_argument("--llama-bench", metavar="PATH",
                   help="also run llama.cpp's llama-bench on every GGUF model (see DECODER.md)")
    p.add_argument("--llama-bench-arg", action="append", default=[], metavar="ARG",
                   help="extra llama-bench argument, repeatable (e.g. --llama-bench-arg=--poll=0)")
    p.add_argument("--no-skim", action="store_true", help="peer only")
    p.add_argument("--no-peer", action="store_true", help="skim only (llama-bench still runs if given)")
    p.add_argument("--scratch", default="/tmp/skim-decoder-bench",
                   help="random models, prompt cache, per-run JSON (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random models (default 0)")
    p.add_argument("--recalibrate", action="store_true", help="ignore the cached prompt texts")
    p.add_argument("--out", help="JSON report (default SCRATCH/report.json)")
    return p.parse_args(argv)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def stats(xs):
    xs = [float(x) for x in xs]
    if not xs:
        return None
    s = sorted(xs)

    def pct(q):
        k = (len(s) - 1) * q
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "p10": pct(0.1),
            "p90": pct(0.9), "mean": statistics.fmean(s), "n": len(s), "samples": xs,
            "spread_pct": 100.0 * (s[-1] - s[0]) / statistics.median(s) if statistics.median(s) else None}


# ----------------------------------------------------------------------------- models

def resolve_models(a):
    out = []
    for item in [m.strip() for m in a.models.split(",") if m.strip()]:
        if "=" in item:
            name, path = item.split("=", 1)
            out.append({"name": name, "path": os.path.abspath(path), "random_dtype": None})
        elif item == "stories260K":
            out.append({"name": item, "path": os.path.join(STORIES, "stories260K.gguf"),
                        "random_dtype": None})
        elif item.startswith("gpt2small-") and item.split("-", 1)[1] in RANDOM_SHAPES:
            dt = item.split("-", 1)[1]
            out.append({"name": item, "random_dtype": dt,
                        "path": os.path.join(a.scratch, f"random-gpt2small-{dt}.gguf")})
        else:
            out.append({"name": os.path.basename(os.path.normpath(item)),
                        "path": os.path.abspath(item), "random_dtype": None})
    return out


def ensure_model(m, a):
    if os.path.exists(m["path"]):
        return
    if not m["random_dtype"]:
        raise SystemExit(f"{m['path']}: not found")
    if a.seed != 0:
        m["path"] = m["path"].replace(".gguf", f"-seed{a.seed}.gguf")
        if os.path.exists(m["path"]):
            return
    os.makedirs(os.path.dirname(m["path"]), exist_ok=True)
    log(f"writing {m['path']} (make_random_llama_gguf.py --dtype {m['random_dtype']})")
    subprocess.run(["nice", "-n", "10", PY, MAKE_GGUF, "--dtype", m["random_dtype"],
                    "--seed", str(a.seed), "--out", m["path"]], check=True)


def is_gguf(path):
    if os.path.isdir(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def model_info(path):
    """Layer count and tensor types, with the float64 reference's readers (no weights read; a GGUF
    header is parsed here, so that block types such as Q8_0 are listed too)."""
    sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
    import llama_reference as ref
    if not is_gguf(path):
        c = ref.load_model(path).cfg
        return {"layers": c["n_layers"], "types": None, "gguf": False}
    with open(path, "rb") as f:
        r = ref._Reader(f.read(64 << 20))                 # the header (vocabulary included)
    r.pos = 4
    version, n_tensors, n_kv = r.unpack("<IQQ")
    meta = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = r.value(r.unpack("<I"))
    types = set()
    for _ in range(n_tensors):
        r.string()
        r.unpack("<" + "Q" * r.unpack("<I"))
        ttype = r.unpack("<I")
        r.unpack("<Q")
        types.add(GGML_TYPE_NAMES.get(ttype, f"type{ttype}"))
    arch = meta.get("general.architecture", "llama")
    return {"layers": int(meta[f"{arch}.block_count"]), "types": sorted(types), "gguf": True}


def llamacpp_reference(m):
    """The fixed llama.cpp figures apply to the random GPT-2-small files only."""
    if m["random_dtype"] and m["random_dtype"] in LLAMACPP_REF:
        return dict(LLAMACPP_REF[m["random_dtype"]], note=LLAMACPP_NOTE, run_here=False)
    return None


# ----------------------------------------------------------------------------- skim

VERBOSE_RE = re.compile(r"skim-generate: (\d+) tokens, stop (\S+), prefill (\d+) tokens in "
                        r"([-+0-9.eE]+|inf|nan) ms, decode ([-+0-9.eE]+|inf|nan) tokens/s")


def run_skim(a, model, prompt, max_tokens, ids=True, flags=()):
    cmd = [a.skim_generate, "--model", model, "--max-tokens", str(max_tokens),
           "--threads", str(a.threads), "--verbose", *flags]
    if prompt is not None:
        cmd += ["--prompt", prompt]
    if ids:
        cmd.append("--ids")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=a.skim_environ)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"skim-generate failed ({p.returncode}): {p.stderr.strip()}\n  {cmd}")
    mt = VERBOSE_RE.search(p.stderr)
    if not mt:
        raise RuntimeError(f"cannot parse skim-generate --verbose output: {p.stderr!r}")
    return {"tokens": int(mt.group(1)), "stop": mt.group(2), "prompt_tokens": int(mt.group(3)),
            "prefill_ms": float(mt.group(4)), "decode_tps": float(mt.group(5)),
            "ids": [int(x) for x in p.stdout.split()] if ids else None,
            "wall_s": wall, "minor_faults": after.ru_minflt - before.ru_minflt,
            "major_faults": after.ru_majflt - before.ru_majflt,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def prompt_count(a, model, text):
    """Number of ids skim feeds for `text` (BOS included); a prompt longer than the context
    counts as the number skim's error message gives."""
    try:
        return run_skim(a, model, text, 1, ids=False)["prompt_tokens"]
    except RuntimeError as e:
        mt = re.search(r"the prompt needs (\d+) tokens", str(e))
        if mt:
            return int(mt.group(1))
        raise


def shortest_prefix(a, model, base, target, cache):
    """Smallest n with count(base[:n]) >= target (binary search; base is extended as needed)."""
    def count(n):
        if n not in cache:
            cache[n] = prompt_count(a, model, base[:n])
        return cache[n]
    lo, hi = 1, max(8, target)
    while count(hi) < target:
        lo = hi + 1
        hi *= 2
        while len(base) < hi:
            base += STORY
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return base, lo, count(lo)


def calibrate_prefill(a, model, target):
    """A prefix of the story text (repeated as needed) that skim encodes to exactly `target` ids
    (BOS included). Binary search on the character count, then nudges the end."""
    base, n, c = shortest_prefix(a, model, STORY, target, {})
    if c == target:
        return base[:n], c
    for m in range(n - 1, max(n - 5, 1), -1):        # one char less + a different ending
        for tail in (".", " a", "!", "?", ","):
            t = base[:m] + tail
            if prompt_count(a, model, t) == target:
                return t, target
    log(f"warning: no prefill text of exactly {target} tokens; using {c}")
    return base[:n], c


def calibrate_decode(a, model, target, n_new):
    """A text of `target` ids (BOS included) from a sentence start of the story after which greedy
    generation runs the full n_new tokens (no early EOS). Returns (text, check run)."""
    starts = [0] + [m.end() for m in re.finditer(r"[.!?] ", STORY)]
    best = None
    for s in starts[:12]:
        base, n, c = shortest_prefix(a, model, STORY[s:] + STORY, target, {})
        text = base[:n]
        r = run_skim(a, model, text, n_new)
        if r["prompt_tokens"] == target and r["tokens"] == n_new:
            return text, r
        if best is None or (r["prompt_tokens"] == target and r["tokens"] > best[1]["tokens"]):
            best = (text, r)
    log(f"warning: no decode prompt of exactly {target} tokens that runs {n_new} tokens; using "
        f"{best[1]['prompt_tokens']} tokens / {best[1]['tokens']} generated")
    return best


def prompts_for(a, m):
    path = os.path.join(a.scratch, "prompts.json")
    try:
        with open(path) as f:
            allp = json.load(f)
    except (OSError, ValueError):
        allp = {}
    st = os.stat(m["path"])
    key = f"{m['path']}|{st.st_size}|{int(st.st_mtime)}|{a.prefill_tokens}|{a.prompt_tokens}|{a.decode_tokens}"
    if key in allp and not a.recalibrate:
        return allp[key]
    log(f"[{m['name']}] calibrating prompt texts with skim's tokenizer ...")
    t0 = time.time()
    pre_text, pre_n = calibrate_prefill(a, m["path"], a.prefill_tokens)
    dec_text, dec_run = calibrate_decode(a, m["path"], a.prompt_tokens, a.decode_tokens)
    entry = {"prefill_text": pre_text, "prefill_tokens": pre_n, "decode_text": dec_text,
             "decode_prompt_tokens": dec_run["prompt_tokens"], "decode_generates": dec_run["tokens"],
             "seconds": time.time() - t0}
    log(f"[{m['name']}] prefill text {len(pre_text)} chars = {pre_n} tokens; decode prompt "
        f"{dec_run['prompt_tokens']} tokens, generates {dec_run['tokens']} ({time.time() - t0:.0f} s)")
    allp[key] = entry
    os.makedirs(a.scratch, exist_ok=True)
    with open(path, "w") as f:
        json.dump(allp, f, indent=1)
    return entry


def skim_check(a):
    """skim's greedy ids from BOS on stories260K against the golden file."""
    exp_path = os.path.join(STORIES, "expected_greedy_from_bos_256.ids.txt")
    with open(exp_path) as f:
        exp = [int(v) for v in f.read().split()]
    r = run_skim(a, os.path.join(STORIES, "stories260K.gguf"), None, len(exp))
    got = r["ids"]
    bad = next((i for i in range(min(len(got), len(exp))) if got[i] != exp[i]), None)
    ok = bad is None and len(got) == len(exp)
    log(f"skim check: greedy {len(exp)} from BOS on stories260K.gguf: "
        + ("OK" if ok else f"FAIL (first difference at {bad}, lengths {len(got)}/{len(exp)})"))
    return {"ok": ok, "first_mismatch": bad, "steps": len(exp), "generated": len(got)}


def bench_skim(a, m, pr, layers, flags=()):
    fl = list(flags)
    log(f"[{m['name']}] skim {' '.join(fl)}: warm-up + {a.reps} prefill runs, {a.reps} decode runs")
    run_skim(a, m["path"], pr["prefill_text"], 1, ids=False, flags=fl)   # warm-up (page cache)
    pre = [run_skim(a, m["path"], pr["prefill_text"], 1, ids=False, flags=fl) for _ in range(a.reps)]
    dec = [run_skim(a, m["path"], pr["decode_text"], a.decode_tokens, ids=False, flags=fl)
           for _ in range(a.reps)]
    ms = stats([r["prefill_ms"] for r in pre])
    per_layer = {k: (v / layers if isinstance(v, float) and k != "spread_pct" else v)
                 for k, v in ms.items() if k != "samples"}
    per_layer["samples"] = [v / layers for v in ms["samples"]]
    tokens = sorted({r["tokens"] for r in dec})
    if tokens != [a.decode_tokens]:
        log(f"warning: skim generated {tokens} tokens instead of {a.decode_tokens}")
    return {
        "prefill": {"tokens": sorted({r["prompt_tokens"] for r in pre}), "reps": a.reps, "ms": ms,
                    "ms_per_layer": per_layer, "layers": layers,
                    "process_wall_s": stats([r["wall_s"] for r in pre]),
                    "minor_faults": stats([r["minor_faults"] for r in pre])},
        "decode": {"prompt_tokens": sorted({r["prompt_tokens"] for r in dec}),
                   "tokens": tokens, "steps_timed": [t - 1 for t in tokens], "reps": a.reps,
                   "stop": sorted({r["stop"] for r in dec}),
                   "tokens_per_s": stats([r["decode_tps"] for r in dec])},
        "binary": a.skim_generate, "flags": fl,
        "command_prefill": [a.skim_generate, "--model", m["path"], "--prompt", "<prefill_text>",
                            "--max-tokens", "1", "--threads", str(a.threads), "--verbose", *fl],
        "command_decode": [a.skim_generate, "--model", m["path"], "--prompt", "<decode_text>",
                           "--max-tokens", str(a.decode_tokens), "--threads", str(a.threads),
                           "--verbose", *fl],
    }


# ----------------------------------------------------------------------------- peer

def run_peer(a, m, compute, prefill_tokens, prompt_tokens, extra=()):
    out = os.path.join(a.scratch, f"peer-{m['name']}-{compute}.json")
    cmd = [PY, PEER, "--model", m["path"], "--threads", str(a.threads), "--compute", compute,
           "--prefill-tokens", str(prefill_tokens), "--prompt-tokens", str(prompt_tokens),
           "--decode-tokens", str(a.decode_tokens), "--reps", str(a.peer_prefill_reps),
           "--warmup", str(a.peer_warmup), "--decode-reps", str(a.reps), "--no-check", "--json", out,
           *extra]
    cmd += a.peer_arg
    log(f"[{m['name']}] pytorch {compute}: {' '.join(cmd)}")
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    sys.stderr.write("".join("    " + ln + "\n" for ln in p.stdout.splitlines()))
    if p.returncode != 0:
        raise RuntimeError(f"llama_peer.py failed ({p.returncode})")
    with open(out) as f:
        r = json.load(f)
    r["command"] = cmd
    return r


def peer_check(a):
    out = os.path.join(a.scratch, "peer-check.json")
    p = subprocess.run([PY, PEER, "--check-only", "--threads", str(a.threads), "--json", out],
                       stdout=subprocess.PIPE, text=True)
    sys.stderr.write(p.stdout)
    try:
        with open(out) as f:
            return json.load(f)["check"]
    except (OSError, ValueError, KeyError):
        return {"ok": False, "error": f"llama_peer.py --check-only exit {p.returncode}"}


# ----------------------------------------------------------------------------- llama.cpp

def run_llamacpp(a, m, layers, prefill_tokens):
    """llama-bench on one GGUF: its pp (prefill) and tg (decode) tests, REPS runs each."""
    cmd = [a.llama_bench, "-m", m["path"], "-t", str(a.threads), "-p", str(prefill_tokens),
           "-n", str(a.decode_tokens), "-r", str(a.reps), "-o", "json", *a.llama_bench_arg]
    log(f"[{m['name']}] llama.cpp: {' '.join(cmd)}")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-8:])
        log(f"[{m['name']}] llama-bench failed ({p.returncode}):\n{tail}")
        return {"ok": False, "error": f"exit {p.returncode}: {tail}", "command": cmd}
    try:
        tests = json.loads(p.stdout)
    except ValueError:
        return {"ok": False, "error": f"cannot parse llama-bench -o json output: {p.stdout[:200]!r}",
                "command": cmd}
    pp = next((t for t in tests if t["n_prompt"] > 0 and t["n_gen"] == 0), None)
    tg = next((t for t in tests if t["n_gen"] > 0 and t["n_prompt"] == 0), None)
    out = {"ok": bool(pp and tg), "command": cmd, "tests": tests}
    if tests:
        out.update({k: tests[0].get(k) for k in ("build_commit", "build_number", "cpu_info",
                                                  "backends", "model_type", "model_size",
                                                  "model_n_params", "n_threads", "type_k",
                                                  "type_v", "n_batch", "n_ubatch", "use_mmap")})
    if pp:
        ms = pp["avg_ns"] / 1e6
        out["prefill"] = {"tokens": pp["n_prompt"], "reps": len(pp.get("samples_ns", [])),
                          "tokens_per_s": {"avg": pp["avg_ts"], "stddev": pp["stddev_ts"]},
                          "ms": {"avg": ms, "stddev": pp["stddev_ns"] / 1e6},
                          "ms_per_layer": {"avg": ms / layers,
                                           "stddev": pp["stddev_ns"] / 1e6 / layers},
                          "samples_ns": pp.get("samples_ns")}
    if tg:
        out["decode"] = {"tokens": tg["n_gen"], "reps": len(tg.get("samples_ns", [])),
                         "tokens_per_s": {"avg": tg["avg_ts"], "stddev": tg["stddev_ts"]},
                         "samples_ns": tg.get("samples_ns")}
    log(f"[{m['name']}] llama.cpp {out.get('build_commit')}: prefill "
        f"{fmt(pp and pp['avg_ts'], '.1f')} tok/s, decode {fmt(tg and tg['avg_ts'], '.1f')} tok/s")
    return out


# ----------------------------------------------------------------------------- report

def ratio(x, y):
    return x / y if x and y else None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def fmt_pm(s, spec):
    if not s:
        return "-"
    return f"{format(s['avg'], spec)} ± {format(s['stddev'], spec)}"


def fmt_range(s, spec):
    if not s:
        return "-"
    return f"{format(s['median'], spec)} ({format(s['min'], spec)}-{format(s['max'], spec)})"


def print_table(report):
    t = report["threads"]
    print()
    ran = report.get("llama_bench") is not None
    print(f"skim vs PyTorch{' vs llama.cpp' if ran else ''}, LLaMA decoders, {t} thread(s); figures "
          f"are median (min-max) over the samples{', llama.cpp avg ± stddev' if ran else ''}; "
          f"ratios are of the medians{' (llama.cpp: of its avg)' if ran else ''}.")
    pre_hdr = ["model", "variant", "tokens", "skim ms", "torch ms", "skim ms/layer", "torch ms/layer",
               "skim/torch (<1 = skim faster)"]
    dec_hdr = ["model", "variant", "prompt+new", "skim tok/s", "torch tok/s",
               "skim/torch (>1 = skim faster)"]
    if ran:
        pre_hdr += ["llama.cpp ms/layer", "skim/llama.cpp (<1 = skim faster)"]
        dec_hdr += ["llama.cpp tok/s", "skim/llama.cpp (>1 = skim faster)"]
    else:
        pre_hdr.append("llama.cpp ms/layer (ref, not run here)")
        dec_hdr.append("llama.cpp tok/s (ref, not run here)")
    pre_rows, dec_rows = [], []
    for m in report["models"]:
        refc = m.get("llamacpp_reference") or {}
        lc = m.get("llamacpp") or {}
        for comp in m["variants"]:
            sk = (m.get("skim") or {}).get(comp)
            pe = (m.get("pytorch") or {}).get(comp)
            r = m["ratios"].get(comp, {})
            rl = (m.get("ratios_llamacpp") or {}).get(comp, {})
            name = comp
            pre = [
                m["name"], name, m.get("prefill_tokens", "-"),
                fmt_range(sk and sk["prefill"]["ms"], ".2f"),
                fmt_range(pe and pe["prefill"]["ms"], ".2f"),
                fmt(sk and sk["prefill"]["ms_per_layer"]["median"], ".3f"),
                fmt(pe and pe["prefill"]["ms_per_layer"]["median"], ".3f"),
                fmt(r.get("prefill_ms"), ".3f"),
            ]
            dec = [
                m["name"], name, f"{m.get('prompt_tokens', '-')}+{m.get('decode_tokens', '-')}",
                fmt_range(sk and sk["decode"]["tokens_per_s"], ".1f"),
                fmt_range(pe and pe["decode"]["tokens_per_s"], ".1f"),
                fmt(r.get("decode_tps"), ".3f"),
            ]
            if ran:
                pre += [fmt_pm(lc.get("prefill", {}).get("ms_per_layer"), ".3f"),
                        fmt(rl.get("prefill_ms_per_layer"), ".3f")]
                dec += [fmt_pm(lc.get("decode", {}).get("tokens_per_s"), ".1f"),
                        fmt(rl.get("decode_tps"), ".3f")]
            else:
                pre.append(fmt(refc.get("prefill_ms_per_layer"), ".1f"))
                dec.append(fmt(refc.get("decode_tps"), ".0f"))
            pre_rows.append(pre)
            dec_rows.append(dec)

    def table(title, hdr, rows):
        print()
        print(title)
        widths = [max(len(str(x)) for x in col) for col in zip(hdr, *rows)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
        print(line(hdr))
        print(line(["-" * w for w in widths]))
        for r in rows:
            print(line(r))
    table("PREFILL: one pass over the prompt (BOS included) + last-position logits; ms, lower is "
          "better; ms/layer = ms / layers", pre_hdr, pre_rows)
    table("DECODE: greedy generation, tokens/s over the single-token steps ((new - 1) / their "
          "time), higher is better", dec_hdr, dec_rows)
    print()
    if ran:
        print(f"llama.cpp: {report['llama_bench']} (build {report.get('llama_bench_build') or '?'}); "
              "prefill = its pp test (random ids), decode = its tg test (from an empty cache, "
              "tok/s = new / time).")
    else:
        print(LLAMACPP_NOTE + ".")
    for m in report["models"]:
        for note in m.get("notes", []):
            print(f"note [{m['name']}]: {note}")
    env = {k: v for k, v in report.get("skim_env", {}).items() if v is not None}
    pol = peer_policy(report)
    print(f"skim environment: {env or 'inherited, no OMP_* set'}; pytorch peer: "
          + (f"OMP_WAIT_POLICY={pol} (llama_peer.py default passive)" if pol else "not run"))
    for k, v in report.get("checks", {}).items():
        print(f"check {k}: {'OK' if v and v.get('ok') else 'FAIL'}")


def peer_policy(report):
    for m in report["models"]:
        for pe in (m.get("pytorch") or {}).values():
            return pe.get("env", {}).get("OMP_WAIT_POLICY")
    return None


def main():
    a = parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    os.makedirs(a.scratch, exist_ok=True)
    a.skim_generate = os.path.abspath(a.skim_generate)
    a.skim_has_bf16 = False
    if not a.no_skim and os.access(a.skim_generate, os.X_OK):
        h = subprocess.run([a.skim_generate, "--help"], capture_output=True, text=True)
        a.skim_has_bf16 = "--bf16" in h.stdout
    a.skim_environ = dict(os.environ)
    for kv in a.skim_env:
        if "=" not in kv:
            raise SystemExit(f"--skim-env {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        a.skim_environ[k] = v
    if not a.no_skim and not os.access(a.skim_generate, os.X_OK):
        raise SystemExit(f"{a.skim_generate}: not found (build skim, or --no-skim)")
    if a.llama_bench:
        a.llama_bench = os.path.abspath(a.llama_bench)
        if not os.access(a.llama_bench, os.X_OK):
            raise SystemExit(f"{a.llama_bench}: not found (see DECODER.md: building llama-bench)")
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "host": platform.node(), "cpu": cpu_name(), "nproc": os.cpu_count(),
              "loadavg_start": os.getloadavg(), "threads": a.threads, "reps": a.reps,
              "peer_prefill_reps": a.peer_prefill_reps, "peer_warmup": a.peer_warmup,
              "skim_env": {k: a.skim_environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                                             "OMP_PROC_BIND", "GOMP_SPINCOUNT")},
              "skim_env_extra": a.skim_env, "peer_args_extra": a.peer_arg,
              "ratio_definition": {"prefill_ms": "skim_ms / torch_ms, below 1 = skim faster",
                                   "prefill_ms_per_layer": "same as prefill_ms",
                                   "decode_tps": "skim_tps / torch_tps, above 1 = skim faster",
                                   "llamacpp": "ratios_llamacpp: skim median / llama-bench avg, "
                                               "prefill as ms per layer (below 1 = skim faster), "
                                               "decode tok/s (above 1 = skim faster)"},
              "llamacpp_reference_note": LLAMACPP_NOTE, "llama_bench": a.llama_bench,
              "llama_bench_args_extra": a.llama_bench_arg, "llama_bench_build": None,
              "checks": {}, "models": []}
    if not a.no_peer:
        report["checks"]["pytorch_stories260K_greedy256"] = peer_check(a)
    if not a.no_skim:
        report["checks"]["skim_stories260K_greedy256"] = skim_check(a)

    for m in resolve_models(a):
        ensure_model(m, a)
        info = model_info(m["path"])
        entry = {"name": m["name"], "path": m["path"], "layers": info["layers"],
                 "tensor_types": info["types"], "llamacpp_reference": llamacpp_reference(m),
                 "decode_tokens": a.decode_tokens, "ratios": {}, "notes": []}
        pre_n, dec_n = a.prefill_tokens, a.prompt_tokens
        variants = ["fp32"]
        if a.bf16 == "on" or (a.bf16 == "auto" and "BF16" in (info["types"] or [])):
            variants.append("bf16")
        entry["variants"] = variants
        if not a.no_skim:
            pr = prompts_for(a, m)
            entry["prompts"] = pr
            pre_n, dec_n = pr["prefill_tokens"], pr["decode_prompt_tokens"]
            entry["skim"] = {}
            for v in variants:
                if v == "bf16" and not a.skim_has_bf16:
                    log(f"[{m['name']}] {a.skim_generate} has no --bf16; skim bf16 skipped")
                    continue
                entry["skim"][v] = bench_skim(a, m, pr, info["layers"],
                                              ["--bf16"] if v == "bf16" else [])
        entry["prefill_tokens"], entry["prompt_tokens"] = pre_n, dec_n
        peer_ok = not (set(info["types"] or []) - PEER_TYPES)
        if not a.no_peer and not peer_ok:
            entry["notes"].append(f"PyTorch peer skipped: it reads {'/'.join(sorted(PEER_TYPES))} "
                                  f"matrices only, the file has {'/'.join(info['types'])}")
            log(f"[{m['name']}] {entry['notes'][-1]}")
        elif not a.no_peer:
            entry["pytorch"] = {v: run_peer(a, m, v, pre_n, dec_n) for v in variants}
        if a.llama_bench and not info["gguf"]:
            entry["notes"].append("llama.cpp skipped: not a GGUF file")
            log(f"[{m['name']}] {entry['notes'][-1]}")
        elif a.llama_bench:
            lc = entry["llamacpp"] = run_llamacpp(a, m, info["layers"], pre_n)
            report["llama_bench_build"] = report["llama_bench_build"] or lc.get("build_commit")
            if not lc["ok"]:
                entry["notes"].append(f"llama-bench failed: {lc.get('error', '')[:300]}")
            entry["ratios_llamacpp"] = {}
            for v in variants:
                sk = (entry.get("skim") or {}).get(v)
                if sk and lc["ok"]:
                    entry["ratios_llamacpp"][v] = {
                        "prefill_ms_per_layer": ratio(sk["prefill"]["ms_per_layer"]["median"],
                                                      lc["prefill"]["ms_per_layer"]["avg"]),
                        "decode_tps": ratio(sk["decode"]["tokens_per_s"]["median"],
                                            lc["decode"]["tokens_per_s"]["avg"])}
        for v in variants:
            sk = (entry.get("skim") or {}).get(v)
            pe = (entry.get("pytorch") or {}).get(v)
            if sk and pe:
                entry["ratios"][v] = {
                    "prefill_ms": ratio(sk["prefill"]["ms"]["median"], pe["prefill"]["ms"]["median"]),
                    "prefill_ms_per_layer": ratio(sk["prefill"]["ms_per_layer"]["median"],
                                                  pe["prefill"]["ms_per_layer"]["median"]),
                    "decode_tps": ratio(sk["decode"]["tokens_per_s"]["median"],
                                        pe["decode"]["tokens_per_s"]["median"]),
                }
        refc = entry["llamacpp_reference"]
        sk = (entry.get("skim") or {}).get(variants[-1])   # bf16 file: skim --bf16
        if sk and refc:
            entry["skim_over_llamacpp_reference"] = {
                "skim_variant": variants[-1],
                "note": "skim now vs llama.cpp figures measured earlier (not run here)",
                "prefill_ms_per_layer": ratio(sk["prefill"]["ms_per_layer"]["median"],
                                              refc["prefill_ms_per_layer"]),
                "decode_tps": ratio(sk["decode"]["tokens_per_s"]["median"], refc["decode_tps"])}
        report["models"].append(entry)

    report["loadavg_end"] = os.getloadavg()
    out = a.out or os.path.join(a.scratch, "report.json")
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print_table(report)
    print(f"\nload average at start {report['loadavg_start'][0]:.2f}, end {report['loadavg_end'][0]:.2f} "
          f"({report['nproc']} cores); JSON: {out}")
    bad = [k for k, v in report["checks"].items() if not (v and v.get("ok"))]
    return 1 if bad else 0


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
