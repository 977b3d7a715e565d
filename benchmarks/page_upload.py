"""The upload page in Chromium (Playwright driving Debian's chromium) against the chunked upload API and
`cp` of the same file, all in one run on loopback; and the page's longest main-thread task while sending.

    python benchmarks/page_upload.py [--size-mib 512]

Goals (issue 15): the page at >= 0.8x the API's rate; no main-thread task over 200 ms while sending.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import results  # noqa: E402
from benchmarks.portal import arguments, scratch, web  # noqa: E402
from benchmarks.upload_ingest import make_file, time_cp, upload  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

# Long tasks (over 50 ms) of the page's main thread, collected from the moment sending starts.
WATCH_LONG_TASKS = """() => {
  window.longTasks = [];
  new PerformanceObserver((list) => list.getEntries().forEach((e) => window.longTasks.push(e.duration)))
    .observe({ type: "longtask" });
}"""


def page_upload(base: str, path: Path, user: str) -> tuple[float, float, float]:
    """Seconds from pressing Import to the row being queued (every byte on the server, checked), of
    those the seconds before the first byte was sent (hashing, the duplicate check), and the longest
    main-thread task meanwhile in ms."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(base + "/login")
            page.fill("input[name=username]", user)
            page.click("form:has(input[name=username]) button")
            page.wait_for_selector("body[data-ready=true]")
            page.set_input_files("#files", str(path))
            page.locator("#rows tbody tr[data-state=pending]").wait_for()
            page.evaluate(WATCH_LONG_TASKS)
            first_put = []
            page.on("request", lambda r: r.method == "PUT" and not first_put and first_put.append(time.perf_counter()))
            start = time.perf_counter()
            page.click("#import")
            page.locator("#rows tbody tr[data-state=queued]").wait_for(timeout=600_000)
            seconds = time.perf_counter() - start
            longest = page.evaluate("() => Math.max(0, ...window.longTasks)")
        finally:
            browser.close()
    return seconds, first_put[0] - start, longest


def main() -> None:
    args = arguments(__doc__, 512)
    with scratch() as work:
        source = work / "session.emd"
        make_file(source, args.size_mib << 20)
        with web(work / "data", PORTAL_STAGING_RESERVE="0") as (base, _):
            cp_seconds = min(time_cp(source, work / "copy.emd") for _ in range(2))
            api_seconds = upload(base, source, 16 << 20)
            page_seconds, before_sending, longest = page_upload(base, source, "page-bench")
        mib = args.size_mib
        print(f"{'what':<28}{'seconds':>9}{'MiB/s':>9}")
        for what, seconds in [("cp (best of 2)", cp_seconds), ("upload API", api_seconds), ("page in Chromium", page_seconds)]:
            print(f"{what:<28}{seconds:>9.2f}{mib / seconds:>9.0f}")
        print(f"of the page's time, hashing and the duplicate check before the first byte: {before_sending:.2f} s")
        print(f"page / API rate: {api_seconds / page_seconds:.2f}   (goal >= 0.80); "
              f"longest main-thread task while sending: {longest:.0f} ms (goal <= 200)")
        results.write(args.json_out, "page_upload", [
            {"case": f"{mib} MiB: page vs API", "ratio": api_seconds / page_seconds, "baseline": "upload API",
             "goal": ">= 0.8", "note": f"longest task {longest:.0f} ms (goal <= 200); {before_sending:.1f} s "
                                       "hashing and checking before the first byte"},
            {"case": f"{mib} MiB: page vs cp", "ratio": cp_seconds / page_seconds, "baseline": "cp",
             "goal": "-", "note": f"page {mib / page_seconds:.0f} MiB/s"}])


if __name__ == "__main__":
    main()
