#!/usr/bin/env bash
# Software Vulkan for LiteRT's GPU accelerator (WebGPU over Vulkan): Mesa's lavapipe ("llvmpipe")
# from Debian's bookworm-backports suite. Bookworm's own Mesa 22.3 is refused by the accelerator
# ("Vulkan shaderUniform*ArrayDynamicIndexing required"); 24 or later works (25.0.7 measured).
# Installs only when run as root with apt-get; otherwise prints one line saying what to install.
# Never fails the caller: without a Vulkan device the GPU rows say "not available" and the tests
# that need one are skipped with that reason.
set -u
want=24
have=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
major=${have%%.*}; major=${major##*:}
if [ -n "$have" ] && [ "${major:-0}" -ge "$want" ] 2>/dev/null && dpkg-query -W libvulkan1 >/dev/null 2>&1; then
  exit 0
fi
msg="GPU accelerator not available here: install mesa-vulkan-drivers >= $want (bookworm-backports) and libvulkan1"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: $msg (as root: bash scripts/install_vulkan.sh)"; exit 0
fi
. /etc/os-release 2>/dev/null || true
suite="${VERSION_CODENAME:-bookworm}-backports"
if ! grep -rqs "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$suite" > /etc/apt/sources.list.d/edge-workbench-backports.sources
fi
echo "installing mesa-vulkan-drivers and libvulkan1 from $suite (software Vulkan for LiteRT's GPU accelerator)"
if apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t "$suite" \
     mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
  echo "installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
else
  echo "note: could not install from $suite; $msg"
fi
exit 0
