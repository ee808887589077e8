"""The chat page in a real headless Chromium (Debian's, driven by Playwright) against the real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from feedback.pairs import read_all
from tests.helpers import ServerHandle

pytestmark = pytest.mark.integration

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# At temperature 0.7 the small model sometimes loops on emoji until the context is full: cap answers so that every
# test's answer ends within its timeout on a slow machine.
ANSWER_CAP = {"max-tokens": "160"}
# A server that answers nothing (port 9, discard): where a hostile answer would send what it steals.
ELSEWHERE = "http://127.0.0.2:9"


@dataclass
class PageEvents:
    """What a page did that a test rules out: the URLs it requested and the policy violations it logged."""

    requests: list[str] = field(default_factory=list)
    policy_violations: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.policy_violations.append(message.text)

    def elsewhere(self, origin: str) -> list[str]:
        return [url for url in self.requests if not url.startswith((origin + "/", "data:"))]


def one_answer(conversation_id: str, question: str, answer: str) -> dict:
    """Local storage holding one conversation, open, of ``question`` and a stored ``answer`` by the base model: how
    a test shows the page an answer no model would write on request."""
    conversation = {
        "id": conversation_id,
        "title": conversation_id,
        "messages": [
            {"role": "user", "content": question},
            {
                "role": "assistant",
                "content": answer,
                "completionId": f"chatcmpl-{conversation_id}",
                "choiceIndex": 0,
                "version": "base",
            },
        ],
    }
    return {"conversations": [conversation], "active": conversation_id}


def open_page(
    browser: Browser,
    server: ServerHandle,
    viewport: dict,
    storage: dict | None = None,
    events: PageEvents | None = None,
) -> Page:
    """A fresh browser profile with the API key and the answer cap set, and ``storage`` preloaded into localStorage;
    ``events`` records the page's requests and console from before it loads."""
    context = browser.new_context(viewport=viewport)
    settings = {"key": server.user_key, **ANSWER_CAP, **(storage or {})}
    preset = {f"chatloop.{k}": v for k, v in settings.items()}
    context.add_init_script(
        f"for (const [k, v] of Object.entries({json.dumps(preset)})) localStorage.setItem(k, JSON.stringify(v));"
    )
    page = context.new_page()
    if events is not None:
        events.watch(page)
    page.goto(server.base_url + "/")
    return page


@pytest.fixture
def page(browser: Browser, server: ServerHandle) -> Iterator[Page]:
    page = open_page(browser, server, DESKTOP)
    yield page
    page.context.close()


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def last_answer(page: Page) -> dict:
    """The last assistant message as the page keeps it in localStorage."""
    return page.evaluate(
        """() => {
            const all = JSON.parse(localStorage.getItem('chatloop.conversations'));
            const id = JSON.parse(localStorage.getItem('chatloop.active'));
            return all.find(c => c.id === id).messages.filter(m => m.role === 'assistant').at(-1);
        }"""
    )


def finished_answer(page: Page) -> dict:
    expect(page.locator(".message.assistant .actions").last).to_be_visible(timeout=60_000)
    return last_answer(page)


def stored_record(server: ServerHandle, completion_id: str) -> dict:
    """The completion's record in Redis, which the server writes just after the stream ends."""
    deadline = time.monotonic() + 10
    while (raw := server.redis.client().get(f"chatloop:completion:{completion_id}")) is None:
        assert time.monotonic() < deadline, "the answer was never recorded"
        time.sleep(0.2)
    return json.loads(raw)


def test_answer_grows_while_it_streams(page: Page) -> None:
    send(page, "Write three paragraphs about the sea.")
    lengths = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # read in one step: the streaming bubble is replaced when the answer ends
        length = page.evaluate(
            "() => document.querySelector('.message.assistant.streaming .bubble')?.innerText.length ?? null"
        )
        if length is not None:
            lengths.append(length)
        elif lengths:
            break
        time.sleep(0.05)
    grown = sorted(set(lengths))
    assert len(grown) >= 3, f"the answer should appear piece by piece, saw lengths {grown}"
    answer = finished_answer(page)
    assert answer["content"] and answer["version"] == "base"
    expect(page.locator(".message.assistant .version").last).to_have_text("base")
    expect(page.locator("#send")).to_be_visible()


def test_max_tokens_setting_caps_the_answer(browser: Browser, server: ServerHandle) -> None:
    page = open_page(browser, server, DESKTOP, {"max-tokens": "3"})
    send(page, "Write a long story about a lighthouse keeper.")
    answer = finished_answer(page)
    page.context.close()
    record = stored_record(server, answer["completionId"])
    assert record["params"]["max_tokens"] == 3
    assert (record["choices"][0]["finish_reason"], record["choices"][0]["completion_tokens"]) == ("length", 3)


def test_stop_cancels_the_stream(browser: Browser, server: ServerHandle) -> None:
    page = open_page(browser, server, DESKTOP, {"max-tokens": ""})  # uncapped, so the answer is still streaming
    send(page, "Write a very long story about a dragon who learns to cook.")
    streaming = page.locator(".message.assistant.streaming .bubble")
    expect(streaming).not_to_have_text("", timeout=30_000)
    page.click("#stop")
    expect(page.locator("#send")).to_be_visible()
    answer = finished_answer(page)
    shown = page.locator(".message.assistant .bubble").last.inner_text()
    time.sleep(1.0)
    assert page.locator(".message.assistant .bubble").last.inner_text() == shown, "text kept coming after stop"
    page.context.close()
    assert stored_record(server, answer["completionId"])["status"] == "aborted"


def test_thumbs_up_lands_in_redis(page: Page, server: ServerHandle) -> None:
    send(page, "Say hello.")
    answer = finished_answer(page)
    page.locator(".message.assistant .up").last.click()
    expect(page.locator(".message.assistant .up").last).to_have_attribute("aria-pressed", "true")
    events = server.recent_events()
    assert any(e.get("answer") == f"{answer['completionId']}:0" and e.get("rating") == "up" for e in events)
    page.locator(".message.assistant .up").last.click()  # a second click clears it
    expect(page.locator(".message.assistant .up").last).to_have_attribute("aria-pressed", "false")


def test_thumbs_down_takes_an_optional_reason(page: Page, server: ServerHandle) -> None:
    send(page, "Say goodbye.")
    answer = finished_answer(page)
    page.locator(".message.assistant .down").last.click()
    page.fill(".reason input", "too short")
    page.click(".reason button:text('Send')")
    expect(page.locator(".reason")).to_have_count(0)
    events = server.recent_events()
    assert any(e.get("answer") == f"{answer['completionId']}:0" and e.get("reason") == "too short" for e in events)


def test_regenerate_and_choice_make_a_pair(page: Page, server: ServerHandle) -> None:
    send(page, "Name a planet.")
    first = finished_answer(page)
    page.locator(".message.assistant .regenerate").last.click()
    expect(page.locator(".compare h2")).to_have_text("Which answer is better?", timeout=60_000)
    page.click(".compare .pick-second")
    expect(page.locator(".compare")).to_have_count(0)
    second = last_answer(page)
    assert second["completionId"] != first["completionId"], "the chosen (second) answer continues the conversation"
    pairs = [p for _, p in read_all(server.redis.client()) if p.rejected.completion_id == first["completionId"]]
    assert [(p.rule, p.chosen.completion_id) for p in pairs] == [("comparison", second["completionId"])]


def test_script_in_an_answer_does_not_run(browser: Browser, server: ServerHandle) -> None:
    hostile = (
        "Here you go:\n\n<script>window.__xss = 'script'</script>\n\n<img src=x onerror=\"window.__xss = 'img'\">\n\n"
        "[click](javascript:window.__xss='link')"
    )
    storage = one_answer("c-xss", "<b>hi</b><script>window.__xss = 'user'</script>", hostile)
    page = open_page(browser, server, DESKTOP, storage)
    expect(page.locator(".message.assistant .bubble")).to_contain_text("Here you go")
    page.locator(".message.assistant a").first.click()
    time.sleep(0.5)
    assert page.evaluate("window.__xss") is None
    assert page.locator(".message script").count() == 0
    assert page.locator(".message [onerror]").count() == 0
    assert page.locator(".message.user .bubble").inner_text().startswith("<b>hi</b>")  # shown as text
    page.context.close()


@pytest.mark.parametrize("path", ["/", "/admin"])
def test_pages_send_a_strict_content_security_policy(server: ServerHandle, path: str) -> None:
    response = httpx.get(server.base_url + path, timeout=30)
    assert response.status_code == 200
    directives = [d.split() for d in response.headers["content-security-policy"].split(";")]
    assert {name: sources for name, *sources in directives} == {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def test_answer_cannot_restyle_the_page_or_reach_another_server(browser: Browser, server: ServerHandle) -> None:
    hostile = (
        "Before\n\n<style>body{display:none}</style>\n\n"
        f'<form action="{ELSEWHERE}/steal"><input name=k><button>Go</button></form>\n\n'
        f'<img src="{ELSEWHERE}/pixel.png">\n\n![pixel]({ELSEWHERE}/markdown.png)\n\n'
        f'<table background="{ELSEWHERE}/table.png"><tr><td>cell</td></tr></table>\n\n'
        '<p style="position:fixed;inset:0;background:red">After</p>\n\n- [x] done\n- [ ] to do'
    )
    events = PageEvents()
    page = open_page(browser, server, DESKTOP, one_answer("c-css", "hi", hostile), events)
    bubble = page.locator(".message.assistant .bubble")
    expect(bubble).to_contain_text("After")
    expect(bubble).to_contain_text("☑ done")
    page.wait_for_load_state("networkidle")
    assert bubble.locator("style, form, input, button, img, [style], [background]").count() == 0
    assert page.evaluate("getComputedStyle(document.body).display") != "none"
    expect(page.locator("#composer")).to_be_visible()
    assert bubble.locator("p", has_text="After").evaluate("node => getComputedStyle(node).position") == "static"
    # No check of policy violations here: the sanitizer parses the answer in an inert document, where Chromium
    # reports the inline style it refuses to apply; the page's own needs are checked at phone width.
    assert events.elsewhere(server.base_url) == []
    page.context.close()


def test_ops_page_runs_under_its_policy(browser: Browser, server: ServerHandle) -> None:
    events = PageEvents()
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    events.watch(page)
    page.goto(server.base_url + "/admin")
    page.fill("#admin-key", server.admin_key)
    page.click("#key-form button")
    expect(page.locator("#routing")).to_contain_text("Active base")
    expect(page.locator("#split div")).to_be_visible()
    expect(page.locator("#rates-chart svg")).to_be_visible()
    assert events.elsewhere(server.base_url) == []
    assert events.policy_violations == []
    context.close()


def test_phone_width_has_no_horizontal_scroll(browser: Browser, server: ServerHandle) -> None:
    wide = "```\n" + "x" * 400 + "\n```\n\n" + "averyveryverylongword" * 20
    events = PageEvents()
    page = open_page(browser, server, PHONE, one_answer("c-wide", "y" * 300, wide), events)
    expect(page.locator(".message.assistant pre")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    assert page.locator("#sidebar").bounding_box()["x"] < 0, "the sidebar folds away at phone width"
    page.click("#toggle-sidebar")
    expect(page.locator("#sidebar")).to_be_in_viewport()
    assert events.policy_violations == [], "the page itself needs nothing its policy forbids"
    page.context.close()
