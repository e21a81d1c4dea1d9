#!/usr/bin/env bash
# The README's first command: start a local lab (hosts with sshd and an app on their own loopback
# addresses, two HAProxy boxes, a Chef server), deploy a new version with `vesemir deploy` while
# steady traffic goes through both HAProxy boxes, print hosts updated, requests served and
# requests failed (0), and tear everything down. Options go to `vesemir-lab demo`
# (--hosts N, --rate R, --concurrency N). Meant for a Debian machine, as root (or with sudo for
# the packages).
set -euo pipefail
cd "$(dirname "$0")/../.."

bash .ci/install-test-servers

cargo build -q -p vesemir-cli --bin vesemir
exec cargo run -q -p vesemir-examples --bin vesemir-lab -- demo "$@"
