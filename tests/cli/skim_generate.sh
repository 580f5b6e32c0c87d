#!/usr/bin/env bash
# skim-generate as a user drives it.
#   skim_generate.sh BINARY STORIES260K_DIR
set -uo pipefail
bin=$1 dir=$2
passed=0 failed=0
check() {
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
expected=$(tr -s ' \n' '  ' <"$dir/expected_greedy_from_bos_256.ids.txt" | sed 's/ *$//')

"$bin" --model "$dir/stories260K.bin" --tokenizer "$dir/tok512.bin" --ids --max-tokens 256 >"$tmp/ids" 2>"$tmp/err"
check "bin --ids exit 0" test $? -eq 0
check "bin --ids matches llama2.c" test "$(cat "$tmp/ids")" = "$expected"
"$bin" --model "$dir/stories260K.gguf" --ids --max-tokens 256 --threads 1 >"$tmp/ids" 2>"$tmp/err"
check "gguf --ids matches llama2.c" test "$(cat "$tmp/ids")" = "$expected"

# Text streams; the greedy text from BOS is the reference text.
"$bin" --model "$dir/stories260K.gguf" --max-tokens 256 >"$tmp/text" 2>"$tmp/err"
check "text matches llama2.c" cmp -s "$tmp/text" "$dir/expected_greedy_from_bos_256.txt"
check "stderr quiet" test ! -s "$tmp/err"

# Sampling under a seed is reproducible.
args=(--model "$dir/stories260K.gguf" --prompt "Once upon a time" --temperature 0.9 --top-k 40 --top-p 0.9 --max-tokens 40)
"$bin" "${args[@]}" --seed 5 >"$tmp/a" 2>/dev/null
"$bin" "${args[@]}" --seed 5 >"$tmp/b" 2>/dev/null
"$bin" "${args[@]}" --seed 6 >"$tmp/c" 2>/dev/null
check "same seed same text" cmp -s "$tmp/a" "$tmp/b"
check "other seed other text" bash -c "! cmp -s '$tmp/a' '$tmp/c'"

# Perplexity: one JSON object with the documented fields.
printf 'Once upon a time there was a cat.\n<|endoftext|>\nThe dog ran to the park.\n<|endoftext|>\n' >"$tmp/docs.txt"
"$bin" --model "$dir/stories260K.gguf" --perplexity "$tmp/docs.txt" >"$tmp/ppl" 2>"$tmp/err"
check "perplexity exit 0" test $? -eq 0
for field in tokens perplexity flops dense_flops seconds; do
  check "perplexity has $field" grep -q "\"$field\":" "$tmp/ppl"
done
check "two documents" grep -q '"documents":2' "$tmp/ppl"

# Errors: one line on stderr, exit 2.
"$bin" --model "$dir/stories260K.bin" >"$tmp/out" 2>"$tmp/err" </dev/null
status=$?
# (tok512.bin sits beside the .bin, so this one finds its tokenizer)
check "bin finds tok512.bin beside it" test $status -eq 0
printf 'NOTGGUF' >"$tmp/bad.gguf"; printf 'GGUF\x09\x00\x00\x00' >"$tmp/v9.gguf"
"$bin" --model "$tmp/v9.gguf" >"$tmp/out" 2>"$tmp/err"
check "bad gguf version exit 2" test $? -eq 2
check "bad gguf one line" test "$(wc -l <"$tmp/err")" -eq 1
"$bin" --model "$dir/stories260K.gguf" --top-p 2 >"$tmp/out" 2>"$tmp/err"
check "bad top-p exit 2" test $? -eq 2
long=$(printf 'the cat sat on the mat. %.0s' $(seq 1 300))
"$bin" --model "$dir/stories260K.bin" --prompt "$long" >"$tmp/out" 2>"$tmp/err"
check "prompt past context exit 2" test $? -eq 2
check "prompt past context named" grep -q "context" "$tmp/err"

echo "$passed passed, $failed failed"
test "$failed" -eq 0
