#!/usr/bin/env bash
# The README's first command: start a local lab (hosts with sshd and an app on their own loopback
# addresses, two HAProxy boxes, a Chef server), deploy a new version with `vesemir deploy` while
# steady traffic goes through both HAProxy boxes, print hosts updated, requests served and
# requests failed (0), and tear everything down. Options go to `vesemir-lab demo`
# (--hosts N, --rate R, --concurrency N). Meant for a Debian machine, as root (or with sudo for
# the packages).
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=(haproxy openssh-server openssh-client goiardi pkg-config libssl-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "Installing ${missing[*]}..."
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo build -q -p vesemir-cli --bin vesemir
exec cargo run -q -p vesemir-examples --bin vesemir-lab -- demo "$@"
