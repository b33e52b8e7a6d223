#!/usr/bin/env bash
# Installs the system tools the deployment tests need, on Debian/Ubuntu. Idempotent: installs only
# what is missing, so a second run does nothing. Safe to call from .ci/run before `make test`.
#   systemd-analyze    tests/test_systemd_unit.py          (package systemd)
#   systemd-nspawn     tests/test_systemd_boot.py (-m container): boots systemd to run the unit
#   buildah, debootstrap, unshare/nsenter, ip
#                      tests/test_container.py (-m container; also needs root)
#   tmux               tests/test_status_view.py: drives `status --watch` in a real terminal
#   chromium           tests/test_page.py: the status page in a real headless browser
#   promtool           tests/test_deploy_files.py: checks and unit-tests deploy/prometheus/alerts.yml
#                      (only the binary, extracted from Debian's prometheus package into
#                      /usr/local/bin, so no Prometheus server gets installed or started)
set -euo pipefail

declare -A package_of=(
    [systemd-analyze]=systemd
    [systemd-nspawn]=systemd-container
    [buildah]=buildah
    [debootstrap]=debootstrap
    [unshare]=util-linux
    [nsenter]=util-linux
    [ip]=iproute2
    [tmux]=tmux
    [chromium]=chromium
)
missing=()
for tool in "${!package_of[@]}"; do
    command -v "$tool" > /dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
need_promtool=0
command -v promtool > /dev/null 2>&1 || need_promtool=1
if ((${#missing[@]} == 0 && need_promtool == 0)); then
    echo "ci-setup: systemd-analyze, systemd-nspawn, buildah, debootstrap, unshare, nsenter, ip, tmux, chromium, promtool present"
    exit 0
fi
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
fi
wanted="${missing[*]}"
((need_promtool)) && wanted="${wanted:+$wanted }promtool"

if [ "$(id -u)" != 0 ]; then
    echo "ci-setup: not root, cannot install $wanted; the tests needing them will skip" >&2
    exit 0
fi
if ! command -v apt-get > /dev/null 2>&1; then
    echo "ci-setup: no apt-get; install $wanted by hand; the tests needing them will skip" >&2
    exit 0
fi
echo "ci-setup: installing $wanted"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if ((${#missing[@]})); then
    apt-get install -y -qq "${missing[@]}" > /dev/null
fi
if ((need_promtool)); then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    if id _apt > /dev/null 2>&1; then chown _apt "$work"; fi   # apt downloads as its sandbox user
    (cd "$work" && apt-get download -qq prometheus)
    dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
    install -m 0755 "$work/x/usr/bin/promtool" /usr/local/bin/promtool
fi
