"""Headless Chromium for page tests: load a page from disk, report images, table rows and errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(e.message || ('failed to load ' + (e.target && (e.target.src || e.target.href)))), true);
const _ce = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); _ce(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const runs = [...document.querySelectorAll('#domains tbody tr')].map(r => r.dataset.run);
  const out = document.createElement('pre'); out.id = 'dgseg-check';
  out.textContent = JSON.stringify({images: imgs.length, broken, runs, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def _run(browser: str, args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def check_page(page: Path, work: Path) -> dict:
    """Open a copy of ``page`` (next to it, so relative links hold) with a probe script; returns
    {images, broken, runs, errors} as the browser saw them after the load event."""
    browser = find_chromium()
    probe_page = page.with_name(f".check_{page.name}")
    probe_page.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    try:
        done = _run(browser, ["--virtual-time-budget=10000", "--dump-dom", probe_page.resolve().as_uri()],
                    work / "profile-check")
    finally:
        probe_page.unlink()
    found = re.search(r'<pre id="dgseg-check">(.*?)</pre>', done.stdout, re.S)
    if not found:
        raise AssertionError(f"the page did not finish loading in Chromium: {done.stderr[-2000:]}")
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    result["uncaught"] = [line for line in done.stderr.splitlines() if "Uncaught" in line]
    return result


def screenshot(page: Path, png: Path, work: Path, size: tuple[int, int] = (1280, 2400)) -> Path:
    done = _run(find_chromium(), [f"--window-size={size[0]},{size[1]}", f"--screenshot={png}",
                                  page.resolve().as_uri()], work / "profile-shot")
    if not png.exists():
        raise AssertionError(f"no screenshot: {done.stderr[-2000:]}")
    return png
