#!/usr/bin/env bash
# skim-classify as a user drives it: arguments, stdin, --json, errors.
#   skim_classify.sh BINARY MODEL_DIR
set -uo pipefail
bin=$1 model=$2
passed=0 failed=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# Plain output: label<TAB>score<TAB>route, one line per argument.
"$bin" --model "$model" --threads 1 "what is my checking balance" "set an alarm for 7 am" >"$tmp/plain" 2>"$tmp/err"
check "plain exit 0" test $? -eq 0
check "plain two lines" test "$(wc -l <"$tmp/plain")" -eq 2
check "plain label<TAB>score<TAB>route" grep -qP '^[a-z_]+\t(0|1)(\.[0-9]+)?(e-[0-9]+)?\t(cache|rule|proposer|transformer)$' "$tmp/plain"

# stdin, one utterance per line; --json objects with the documented fields.
printf 'book a table for two\nhow do i say hello in german\n' | "$bin" --model "$model" --json >"$tmp/json" 2>"$tmp/err"
check "json exit 0" test $? -eq 0
check "json two lines" test "$(wc -l <"$tmp/json")" -eq 2
for field in text label score route flops dense_flops ms; do
  check "json has $field" grep -q "\"$field\":" "$tmp/json"
done
check "json route named" grep -qE '"route":"(cache|rule|proposer|transformer)"' "$tmp/json"
"$bin" --model "$model" --no-router --json "book a table for two" >"$tmp/dense" 2>"$tmp/err"
check "no-router route transformer" grep -q '"route":"transformer"' "$tmp/dense"
"$bin" --model "$model" --shadow-rate 2 "x" >"$tmp/out" 2>"$tmp/err"
check "bad shadow rate exit 2" test $? -eq 2
check "json keeps the text" grep -q '"text":"book a table for two"' "$tmp/json"

# Errors: one line on stderr, exit code 2.
"$bin" --model /nonexistent >"$tmp/out" 2>"$tmp/err"
check "missing model exit 2" test $? -eq 2
check "missing model one line" test "$(wc -l <"$tmp/err")" -eq 1
check "missing model named" grep -q /nonexistent "$tmp/err"
printf 'fine text\n\nmore\n' | "$bin" --model "$model" >"$tmp/out" 2>"$tmp/err"
check "empty line exit 2" test $? -eq 2
check "empty line names line 2" grep -q "line 2" "$tmp/err"
"$bin" --model "$model" $'bad \xff byte' >"$tmp/out" 2>"$tmp/err"
check "invalid utf-8 exit 2" test $? -eq 2
check "invalid utf-8 names byte" grep -q "byte 4" "$tmp/err"
"$bin" >"$tmp/out" 2>"$tmp/err"
check "no --model exit 2" test $? -eq 2

echo "$passed passed, $failed failed"
test "$failed" -eq 0
