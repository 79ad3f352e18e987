# Sourced by .ci/run: Debian's chromium, for the test that opens `mosaic demo`'s report in a real
# headless browser (tests/test_report.py, tests/test_demo.py). Never fails CI: without root or
# apt-get it says why, and those tests skip saying so.
if command -v chromium >/dev/null 2>&1; then
  echo "ci: chromium present: $(chromium --version 2>/dev/null)"
elif [ "$(id -u)" != "0" ]; then
  echo "ci: not root; chromium not installed (report browser tests will skip)"
elif ! command -v apt-get >/dev/null 2>&1; then
  echo "ci: no apt-get; chromium not installed (report browser tests will skip)"
else
  echo "ci: installing Debian's chromium"
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/tmp/ci-chromium.log 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >>/tmp/ci-chromium.log 2>&1; }; then
    echo "ci: $(chromium --version 2>/dev/null)"
  else
    echo "ci: chromium install failed (see /tmp/ci-chromium.log); report browser tests will skip"
  fi
fi
