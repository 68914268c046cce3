"""The review page in a real browser (Debian's Chromium driven by Playwright) against the real
``mrseg review`` server process on 127.0.0.1: the list, an image in radiological orientation,
decisions by keyboard that survive a SIGKILL of the server and that a second server sees."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from mrseg.classes import BASE, class_colors
from mrseg_processes import mrseg_process

pytestmark = pytest.mark.slow


def chromium() -> str:
    for name in (os.environ.get("MRSEG_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) if name else None
        if found:
            return found
    pytest.skip("no Chromium here (the README's install command gets it with apt-get install chromium)")


@pytest.fixture()
def browser() -> Iterator[object]:
    executable = chromium()
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    process = mrseg_process("review", str(folder), "--port", "0", "--reviewer", "tester")
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    assert match, line + process.stderr.read()
    return process, match.group(0)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        process.wait(timeout=30)


def decisions(folder: Path) -> dict[str, str]:
    with open(folder / "review.csv", newline="") as handle:
        return {row["case"]: row["decision"] for row in csv.DictReader(handle)}


def opened(page: object, case: str) -> None:
    page.wait_for_selector(f"#viewer[data-rendered='{case}']", timeout=30000)


COLOUR_SIDE = """([liver, spleen]) => {
  const canvas = document.getElementById("axial");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const found = {liver: [], spleen: []};
  let lit = 0;
  for (let p = 0; p < data.length; p += 4) {
    const x = (p / 4) % canvas.width;
    if (data[p] + data[p + 1] + data[p + 2] > 30) lit++;
    for (const [name, c] of [["liver", liver], ["spleen", spleen]]) {
      if (data[p] === c[0] && data[p + 1] === c[1] && data[p + 2] === c[2]) found[name].push(x / canvas.width);
    }
  }
  const mean = (v) => v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
  return {liver: mean(found.liver), spleen: mean(found.spleen), lit: lit / (data.length / 4)};
}"""


def test_review_in_the_browser(browser, review_folder, tmp_path):
    from playwright.sync_api import expect

    server, url = start_server(review_folder)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.wait_for_selector("#cases tbody tr")
        rows = page.locator("#cases tbody tr")
        assert rows.count() == 4
        assert rows.nth(0).get_attribute("data-case") == "broken_case"  # worst first: the failure

        # a stored-RAS phantom: liver (patient right) on screen left, spleen on screen right
        page.locator("#cases tbody tr[data-case='ras_case']").click()
        opened(page, "ras_case")
        page.locator("#opacity").fill("1")  # pure class colours, to find them pixel by pixel
        colours = class_colors({c.index: c.name for c in BASE.classes})
        sides = page.evaluate(COLOUR_SIDE, [list(colours[BASE.index_of("liver")]),
                                            list(colours[BASE.index_of("spleen")])])
        assert sides["lit"] > 0.2  # not a blank canvas
        assert sides["liver"] is not None and sides["spleen"] is not None, sides
        assert sides["liver"] < 0.5 < sides["spleen"], sides
        page.locator("#axial").hover()
        assert page.locator("#hover").inner_text() != ""
        page.screenshot(path=str(tmp_path / "review.png"))

        # keyboard: r rejects the open case and moves to the next, f flags, k goes back, a accepts
        order = [rows.nth(n).get_attribute("data-case") for n in range(4)]
        rows.nth(0).click()
        expect(page.locator("#viewer")).to_have_attribute("data-rendered", order[0])
        page.keyboard.press("r")
        expect(page.locator("#viewer")).to_have_attribute("data-case", order[1])
        page.keyboard.press("n")  # n: type a note, Enter: back to the keys
        page.keyboard.type("spleen too small")
        page.keyboard.press("Enter")
        page.keyboard.press("f")
        expect(page.locator("#viewer")).to_have_attribute("data-case", order[2])
        assert decisions(review_folder) == {order[0]: "reject", order[1]: "flag"}
        page.keyboard.press("k")
        expect(page.locator("#viewer")).to_have_attribute("data-case", order[1])
        page.keyboard.press("a")  # the count stays 2 of 4: wait for the saved accept itself
        expect(page.locator(f"#cases tbody tr[data-case='{order[1]}'] td.decision-accept")).to_have_count(1)
        expect(page.locator("#progress")).to_have_text(re.compile("^2 of 4"))
        assert decisions(review_folder) == {order[0]: "reject", order[1]: "accept"}
        assert "spleen too small" in (review_folder / "review.csv").read_text()
        page.keyboard.press("j")
        expect(page.locator("#viewer")).to_have_attribute("data-rendered", order[3])
        assert errors == []

        refused = [page.request.get(url + path).status for path in
                   ("files/..%2F..%2Fetc%2Fpasswd", "files/%2e%2e/%2e%2e/etc/passwd", "static/..%2Fserver.py")]
        assert all(status in (403, 404) for status in refused), refused
    finally:
        stop(server, signal.SIGKILL)  # decisions are already on disk, whole

    assert not [p for p in review_folder.iterdir() if p.name.startswith(".review.csv")]
    second, url = start_server(review_folder)
    try:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector(f"#cases tbody tr[data-case='{order[0]}'] td.decision-reject")
        assert page.locator("#progress").inner_text().startswith("2 of 4")
    finally:
        stop(second)
