#!/bin/sh
# System packages some tests use, from the distribution (never a browser download):
#   chromium     the review page's tests drive it headless with Playwright
#   dicom3tools  dciodvfy, the DICOM standard's validator, checks every DICOM-SEG the tests write
# Where they cannot be installed (no apt-get, no root), those tests skip with a message; this
# script never stops the install.
PACKAGES="chromium dicom3tools"
if command -v chromium >/dev/null 2>&1 && command -v dciodvfy >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_packages: no apt-get here; install $PACKAGES yourself (until then those tests skip)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "install_system_packages: not root and no sudo; install $PACKAGES yourself (until then those tests skip)"
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q $PACKAGES >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q $PACKAGES >/dev/null 2>&1; } \
  || echo "install_system_packages: apt-get could not install $PACKAGES; those tests skip"
exit 0
