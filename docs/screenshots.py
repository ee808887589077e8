"""Take the chat page's screenshots in docs/ (desktop and phone width) from a running server.

make run   # in another terminal
.venv/bin/python docs/screenshots.py [--url http://127.0.0.1:8000] [--key sk-chatloop-local]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
QUESTIONS = ["What is the capital of France?", "Give me three tips for learning Python, as a list."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default="sk-chatloop-local")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.add_init_script(f"localStorage.setItem('chatloop.key', JSON.stringify({args.key!r}))")
        page.goto(args.url + "/")
        for question in QUESTIONS:
            page.fill("#prompt", question)
            page.press("#prompt", "Enter")
            expect(page.locator("#send")).to_be_visible(timeout=120_000)
        page.locator(".message.assistant .up").first.click()
        page.screenshot(path=HERE / "chat-desktop.png")
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()  # the phone layout as it first appears, sidebar folded away
        expect(page.locator(".message.assistant").first).to_be_visible()
        page.screenshot(path=HERE / "chat-phone.png")
        browser.close()


if __name__ == "__main__":
    main()
