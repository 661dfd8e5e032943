"""report.html in headless Chromium: it renders, every image loads, nothing is fetched, no console errors.

Skipped (with the reason) where Chromium is missing, except under CI=true, where a missing
browser is a failure: CI installs it (``apt-get install -y chromium``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from resilient import record
from resilient.report import write_report

pytestmark = pytest.mark.browser

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--hide-scrollbars", "--mute-audio")

# Injected into a copy of the page (the report itself has no script): records errors from the
# start, and on load writes what it found into the DOM for --dump-dom to return.
PROBE = r"""<script>
window.__problems = [];
window.addEventListener('error', function (event) {
  var target = event.target && (event.target.src || event.target.href);
  window.__problems.push('error: ' + (event.message || target || event));
}, true);
['error', 'warn'].forEach(function (level) {
  var original = console[level];
  console[level] = function () {
    window.__problems.push('console.' + level + ': ' + Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
});
function external() {
  // every URL the page refers to that is neither inline (data:) nor an anchor on the page
  var urls = Array.prototype.map.call(document.querySelectorAll('[src], [href]'), function (node) {
    return node.getAttribute('src') || node.getAttribute('href');
  });
  Array.prototype.forEach.call(document.styleSheets, function (sheet) {
    Array.prototype.forEach.call(sheet.cssRules, function (rule) {
      (rule.cssText.match(/url\(([^)]*)\)/g) || []).forEach(function (u) { urls.push(u); });
    });
  });
  return urls.filter(function (u) { return !/^(data:|#|url\(["']?data:)/.test(u); });
}
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var result = {
    images: images.length,
    loaded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    sources: images.map(function (i) { return i.src.slice(0, 22); }),
    resources: performance.getEntriesByType('resource').map(function (r) { return r.name; }),
    external: external(),
    summaryRows: document.querySelectorAll('#summary-table tbody tr').length,
    summaryHeader: Array.prototype.map.call(document.querySelectorAll('#summary-table thead th'),
                                            function (th) { return th.textContent; }),
    checks: document.querySelectorAll('#checks-table tbody tr').length,
    sections: Array.prototype.map.call(document.querySelectorAll('section[id]'), function (s) { return s.id; }),
    verdict: document.getElementById('verdict').getAttribute('data-verdict'),
    bannerColour: getComputedStyle(document.getElementById('verdict')).backgroundColor,
    problems: window.__problems
  };
  var out = document.createElement('pre');
  out.id = 'probe-result';
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def find_chromium(candidates: tuple[str, ...] = CANDIDATES, fallback: str = "/usr/bin/chromium") -> str:
    """Chromium's path; skip when it is missing, but fail under CI=true."""
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    if os.path.exists(fallback):
        return fallback
    reason = "headless Chromium not found (install it with `apt-get install -y chromium`)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so the browser test must run")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def report_files(tmp_path_factory):
    from arviz_base import from_dict

    rng = np.random.default_rng(11)
    shape = (4, 400)
    diverging = np.zeros(shape, dtype=bool)
    diverging[1, ::20] = True
    depth = np.full(shape, 4)
    posterior = {"mu": rng.normal(size=shape) + np.array([0, 0, 0.5, 1.0])[:, None],
                 "tau": np.abs(rng.normal(size=shape)), "theta": rng.normal(size=(*shape, 4))}
    stats = {"diverging": diverging, "tree_depth": depth, "n_steps": 2 ** depth - 1, "energy": rng.normal(size=shape),
             "lp": rng.normal(size=shape), "acceptance_rate": rng.uniform(0.5, 1, size=shape),
             "step_size": np.full(shape, 0.3)}
    data = from_dict({"posterior": posterior, "sample_stats": stats}, dims={"theta": ["school"]})
    record.attach(
        data,
        preflight={"model": "eight_schools", "backend": "numpyro", "status": "fixed", "seconds": 0.3, "findings": [
            {"severity": "fixed", "check": "rewrite", "site": "theta", "parameter": "tau", "values": {"tau": 0.1},
             "cause": "centred hierarchical normal (a funnel)", "fix": "non-centred theta", "fix_applied": True,
             "message": "theta ~ Normal(mu, tau) is centred; rewritten non-centred"}]},
        attempts=[
            {"attempt": 1, "backend": "numpyro", "settings": {"target_accept": 0.8}, "remedy": None,
             "failure": "divergences", "outcome": "retry", "seconds": 2.5, "draws": 1600, "divergences": 90},
            {"attempt": 2, "backend": "numpyro", "settings": {"target_accept": 0.95}, "remedy": "noncenter",
             "failure": None, "outcome": "accepted", "seconds": 3.0, "draws": 1600, "divergences": 20}],
        run={"backend": "numpyro", "model": "eight_schools", "status": "ok", "message": ""},
    )
    folder = tmp_path_factory.mktemp("browser_report")
    return write_report(data, folder)


def run_chromium(chromium: str, profile, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True, text=True, timeout=180, check=False,
    )


def probe(chromium: str, page_text: str, folder) -> tuple[dict, str]:
    """Load ``page_text`` with the probe injected; return the probe's findings and Chromium's stderr."""
    probed = folder / "probed.html"
    probed.write_text(page_text.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    dumped = run_chromium(chromium, folder / "profile-dom", "--virtual-time-budget=10000",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", probed.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', dumped.stdout, re.DOTALL)
    assert match, f"the probe did not run; stderr: {dumped.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1))), dumped.stderr


def test_the_probe_sees_broken_images_fetches_and_console_errors(tmp_path):
    import matplotlib.image

    chromium = find_chromium()
    fetched = tmp_path / "fetched.png"
    matplotlib.image.imsave(fetched, np.zeros((4, 4)))
    broken = ('<!DOCTYPE html><html><head></head><body><header id="verdict" data-verdict="ok"></header>'
              '<img alt="broken" src="data:image/png;base64,AAAA">'
              f'<img alt="missing" src="{(tmp_path / "missing.png").as_uri()}">'
              f'<img alt="fetched" src="{fetched.as_uri()}">'
              "<script>console.error('boom')</script></body></html>")
    result, _ = probe(chromium, broken, tmp_path)
    assert (result["images"], result["loaded"]) == (3, 1)
    assert result["external"] == [(tmp_path / "missing.png").as_uri(), fetched.as_uri()]
    assert "console.error: boom" in result["problems"]
    assert sum(p.startswith("error: ") for p in result["problems"]) == 2  # two images failed to load


def test_report_renders_in_chromium(report_files, tmp_path):
    chromium = find_chromium()
    result, stderr = probe(chromium, report_files["html"].read_text(encoding="utf-8"), tmp_path)

    assert result["problems"] == []
    assert re.findall(r"CONSOLE\(\d+\)|Uncaught", stderr) == []
    assert result["images"] == 5
    assert result["loaded"] == result["images"], result
    assert set(result["sources"]) == {"data:image/png;base64,"}
    assert result["external"] == [] and result["resources"] == []  # self-contained: nothing to fetch
    assert result["summaryRows"] == 6
    assert result["summaryHeader"][:3] == ["variable", "mean", "sd"]
    assert result["checks"] == 8
    assert result["sections"] == ["checks", "summary", "preflight", "attempts", "plots"]
    assert result["verdict"] == "fail"
    assert result["bannerColour"] == "rgb(207, 34, 46)"


def test_report_screenshot_shows_the_banner(report_files, tmp_path):
    import matplotlib.image

    chromium = find_chromium()
    shot = tmp_path / "report.png"
    taken = run_chromium(chromium, tmp_path / "profile-shot", "--window-size=1280,2400",
                         "--virtual-time-budget=10000", f"--screenshot={shot}", report_files["html"].as_uri())
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 50_000
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    banner = (pixels[:200, :, :3] * 255).round().astype(int)
    red = np.all(np.abs(banner - np.array([207, 34, 46])) <= 3, axis=-1)
    assert red.sum() > 50_000  # the FAIL banner is there, in its colour
    assert pixels[:, :, :3].std() > 0.05  # not a blank page
    keep = os.environ.get("RESILIENT_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_a_missing_chromium_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
    nowhere = ("resilient-no-such-browser",), str(tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"headless Chromium not found .*CI=true"):
        find_chromium(*nowhere)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"headless Chromium not found \(install it with"):
        find_chromium(*nowhere)
