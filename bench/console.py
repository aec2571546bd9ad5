"""The web console's first load, measured in Debian's Chromium on loopback: bytes transferred for
the first page (document, modules, stylesheet, icon), first contentful paint, and the time until
the sign-in form is drawn and takes input (the `console-ready` mark the console sets). Each load
is a fresh browser context (nothing cached). Writes a table to bench/CONSOLE.md.

    .venv/bin/python bench/console.py [--loads 20]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from playwright.async_api import async_playwright

from llm_gateway.config.loader import load_config
from llm_gateway.server.app import create_server

OUT = Path(__file__).with_name("CONSOLE.md")


async def measure(loads: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "gateway.toml"
        config_path.write_text(f'[http]\nport = 0\n[ledger]\nurl = "sqlite:///{tmp}/ledger.db"\n')
        server = await create_server(load_config(config_path, {}), host="127.0.0.1", port=0)
        await server.start()
        assert server.http is not None
        url = f"http://127.0.0.1:{server.http.port}/ui/"
        found: dict[str, list[float]] = {"bytes": [], "fcp_ms": [], "ready_ms": [], "files": []}
        try:
            async with async_playwright() as playwright:
                chromium = shutil.which("chromium") or "/usr/bin/chromium"
                browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                for _ in range(loads):
                    context = await browser.new_context()
                    page = await context.new_page()
                    await page.goto(url)
                    await page.wait_for_function("performance.getEntriesByName('console-ready').length > 0")
                    timing = await page.evaluate(
                        """() => {
                          const nav = performance.getEntriesByType('navigation')[0];
                          const resources = performance.getEntriesByType('resource');
                          const fcp = performance.getEntriesByName('first-contentful-paint')[0];
                          return {
                            bytes: nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0),
                            files: 1 + resources.length,
                            fcp: fcp ? fcp.startTime : null,
                            ready: performance.getEntriesByName('console-ready')[0].startTime,
                          };
                        }"""
                    )
                    found["bytes"].append(timing["bytes"])
                    found["files"].append(timing["files"])
                    found["fcp_ms"].append(timing["fcp"] or 0.0)
                    found["ready_ms"].append(timing["ready"])
                    await context.close()
                await browser.close()
        finally:
            await server.stop(0)
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()
    found = asyncio.run(measure(args.loads))
    median = {name: statistics.median(values) for name, values in found.items()}
    worst = {name: max(values) for name, values in found.items()}
    table = "\n".join(
        [
            "# The web console's first load",
            "",
            f"`.venv/bin/python bench/console.py --loads {args.loads}` on {datetime.now(UTC):%Y-%m-%d}: the",
            "sign-in page at `/ui/` in Debian's Chromium (headless) over loopback, a fresh context each",
            "load (nothing cached). Targets: under 300 KB transferred, under 300 ms to interactive.",
            "",
            "| Measure | Median | Worst |",
            "| --- | ---: | ---: |",
            f"| Files fetched | {median['files']:.0f} | {worst['files']:.0f} |",
            f"| Bytes transferred (headers and bodies) | {median['bytes'] / 1024:.1f} KB "
            f"| {worst['bytes'] / 1024:.1f} KB |",
            f"| First contentful paint | {median['fcp_ms']:.0f} ms | {worst['fcp_ms']:.0f} ms |",
            f"| Sign-in form drawn, taking input (`console-ready`) | {median['ready_ms']:.0f} ms "
            f"| {worst['ready_ms']:.0f} ms |",
            "",
        ]
    )
    OUT.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
