"""Install the Debian packages the browser tests need (chromium), once, when root.

Runs before the suite in `make test`; skips quietly when chromium is there already or when it
cannot install (the browser tests then skip with a message saying so).
"""

import os
import shutil
import subprocess
import sys

if shutil.which("chromium"):
    sys.exit(0)
if os.geteuid() != 0 or not shutil.which("apt-get"):
    print("setup_test_deps: chromium missing and not root; browser tests will be skipped")
    sys.exit(0)
env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
try:
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=900)
except (subprocess.SubprocessError, OSError) as exc:
    print(f"setup_test_deps: could not install chromium ({exc}); browser tests will be skipped")
