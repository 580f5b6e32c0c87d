#!/usr/bin/env bash
# Installs skim's Debian packages, configures a Release build in ./build and
# builds everything. With --demo it then classifies a few utterances with the
# shipped CLINC150 model.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config
          libdnnl-dev libeigen3-dev libspdlog-dev libgtest-dev libgmock-dev libbenchmark-dev
          nlohmann-json3-dev libcli11-dev
          python3 python3-torch python3-numpy libopenblas0-pthread)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"

if [ "${1:-}" = "--demo" ]; then
  # One request per line, as a service sees them: the repeated one comes back
  # from the answer cache. The route column says who answered.
  printf '%s\n' \
    "what's my checking account balance" \
    "set an alarm for 6 am tomorrow" \
    "how do I say thank you in french" \
    "can you tell me a joke about penguins" \
    "what is the meaning of life and everything" \
    "what's my checking account balance" |
    ./build/examples/skim-classify/skim-classify --model examples/models/clinc150-bert
fi
