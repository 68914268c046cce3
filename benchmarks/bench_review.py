"""How fast the review page opens a large case: 512 × 512 × 300 voxels, in a real browser.

    python benchmarks/bench_review.py [--work /tmp/bench_review] [--cases 3] [--screenshot review.png]

Builds ``--cases`` cases of 512 × 512 × 300 voxels (int16 image, uint8 labels, compressed NIfTI,
a phantom at 3 mm scaled up) with case records and statistics, starts ``mrseg review`` on
127.0.0.1 and drives Debian's Chromium with Playwright:

- the first view: the page loads and shows the worst case (nothing loaded yet);
- ``j`` after the page had a moment: the next case, loaded in the background while the reviewer
  looked at the previous one (what a reviewer going through a list sees);
- a click on a case nobody asked for yet: a cold open (read from disk, reoriented, sliced);
- ``ArrowUp`` through 20 axial slices: one slice fetched and drawn per key.

Each time runs from the key press or click to the moment all three planes are drawn (the page
records it in ``window.lastOpenMs``). The target is 2 s to open a case after the first view.
The server's own load time (read both files, bring them to LPS) is measured in this process
beside it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPE = (300, 512, 512)
"""Numpy order (z, y, x): 300 slices of 512 × 512."""


def build_cases(work: Path, count: int) -> Path:
    import numpy as np
    from scipy.ndimage import zoom

    from mrseg.classes import BASE
    from mrseg.io import write_image
    from mrseg.io.image import Image
    from mrseg.phantom import make_case
    from mrseg.report.records import CaseRecord, OutputFile
    from mrseg.report.statistics import class_statistics, write_statistics

    folder = work / "out"
    if len(list(folder.glob("*_record.json"))) >= count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    names = {c.index: c.name for c in BASE.classes}
    for n in range(count):
        case = make_case(seed=94000 + n, modality="ct", sequence="contrast", fov="trunk", spacing=(3.0, 3.0, 3.0))
        image, labels = case.image.array, case.labels.array
        factors = [target / have for target, have in zip(SHAPE, image.shape)]
        big_image = zoom(image.astype(np.float32), factors, order=1).astype(np.int16)
        big_labels = zoom(labels, factors, order=0).astype(np.uint8)
        spacing = tuple(s / f for s, f in zip(case.image.geometry.spacing, factors[::-1]))
        image_path = write_image(Image.from_array(big_image, spacing=spacing), work / "inputs" / f"big{n}.nii.gz")
        label_image = Image.from_array(big_labels, spacing=spacing)
        labels_path = write_image(label_image, folder / f"big{n}_seg.nii.gz")
        stats, _ = write_statistics(class_statistics(label_image, names=names), folder / f"big{n}_seg_stats")
        record = CaseRecord(f"big{n}", str(image_path), "segmented", outputs={
            "labels": OutputFile(labels_path.name, labels_path.stat().st_size),
            "statistics_json": OutputFile(stats.name, stats.stat().st_size)})
        (folder / f"big{n}_seg_record.json").write_text(record.to_json())
    return folder


def server_load_seconds(folder: Path, repeats: int = 3) -> list[float]:
    from mrseg.review.sources import open_source
    from mrseg.review.volumes import load_volume

    case = open_source(folder).cases()[0]
    times = []
    for _ in range(repeats):
        clock = time.perf_counter()
        load_volume(case.image, case.labels)  # type: ignore[arg-type]
        times.append(time.perf_counter() - clock)
    return times


def browser_times(folder: Path, chromium: str, screenshot: Path | None) -> dict[str, float | list[float]]:
    from playwright.sync_api import expect, sync_playwright

    server = subprocess.Popen([sys.executable, "-m", "mrseg", "review", str(folder), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+", server.stdout.readline()).group(0)  # type: ignore[union-attr]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            clock = time.perf_counter()
            page.goto(url)
            rows = page.locator("#cases tbody tr")
            rows.first.wait_for()
            order = [rows.nth(n).get_attribute("data-case") for n in range(rows.count())]
            expect(page.locator("#viewer")).to_have_attribute("data-rendered", order[0], timeout=60000)
            first_view = time.perf_counter() - clock
            time.sleep(4.0)  # the reviewer looks at the case; the next one loads meanwhile
            page.keyboard.press("j")
            expect(page.locator("#viewer")).to_have_attribute("data-rendered", order[1], timeout=60000)
            warm = page.evaluate("window.lastOpenMs") / 1000
            cold = float("nan")
            if len(order) > 2:
                page.locator(f"#cases tbody tr[data-case='{order[-1]}']").click()  # never warmed
                expect(page.locator("#viewer")).to_have_attribute("data-rendered", order[-1], timeout=60000)
                cold = page.evaluate("window.lastOpenMs") / 1000
            label = page.locator("#axial-index")
            scroll = []
            for _ in range(20):
                before = label.inner_text()
                clock = time.perf_counter()
                page.keyboard.press("ArrowUp")
                expect(label).not_to_have_text(before)
                scroll.append(time.perf_counter() - clock)
            if screenshot is not None:
                page.mouse.move(600, 300)
                page.screenshot(path=str(screenshot))
            browser.close()
        return {"first_view": first_view, "warm": warm, "cold": cold, "scroll": scroll}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_review"))
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--screenshot", type=Path, help="save the page after the last open")
    args = parser.parse_args()
    if not args.chromium:
        sys.exit("no Chromium found; apt-get install chromium, or pass --chromium PATH")
    folder = build_cases(args.work, args.cases)
    loads = server_load_seconds(folder)
    times = browser_times(folder, args.chromium, args.screenshot)
    target = 2.0
    print(f"volume {SHAPE[2]} x {SHAPE[1]} x {SHAPE[0]} voxels, int16 image + uint8 labels, .nii.gz")
    print(f"server load (read both files, to LPS): {', '.join(f'{t:.2f}' for t in loads)} s")
    print(f"first view (page load + first case):  {times['first_view']:.2f} s")
    opens = (("next case after a look (j, warmed):  ", "warm"), ("case opened cold (click, not warmed):", "cold"))
    for label, key in opens:
        print(f"{label} {times[key]:.2f} s = {times[key] / target:.2f} of the 2 s target")  # type: ignore[operator]
    scroll = times["scroll"]
    print(f"one axial slice (ArrowUp), median of {len(scroll)}: {1000 * statistics.median(scroll):.0f} ms "  # type: ignore[arg-type]
          f"(max {1000 * max(scroll):.0f} ms)")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
