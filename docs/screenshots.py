"""Take the chat page's screenshots in docs/ (desktop and phone width) from a running server.

make run   # in another terminal
.venv/bin/python docs/screenshots.py [--url http://127.0.0.1:8000] [--admin-key sk-chatloop-admin]

The page is signed in as the account `screenshots` through a one-time link the admin key makes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
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
ACCOUNT = "screenshots"
QUESTIONS = ["What is the capital of France?", "Give me three tips for learning Python, as a list."]


def signin_link(url: str, admin_key: str) -> str:
    """A one-time link that signs the page in as ``ACCOUNT``, which the first run makes."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    made = httpx.post(f"{url}/v1/admin/users", json={"name": ACCOUNT}, headers=headers, timeout=30)
    if made.status_code == 409:  # made by an earlier run
        made = httpx.post(f"{url}/v1/admin/users/{ACCOUNT}/link", headers=headers, timeout=30)
    made.raise_for_status()
    return made.json()["link"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--admin-key", default="sk-chatloop-admin")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(signin_link(args.url, args.admin_key))
        page.click("#new-chat")  # not after an earlier run's conversation
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
