"""The chat page in a real headless Chromium (Debian's, driven by Playwright) against the real server: people sign
in with a one-time link or a password, and their conversations live on the server."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from core import keys
from feedback.pairs import read_all
from tests.factories import completion_record
from tests.helpers import ServerHandle

pytestmark = pytest.mark.integration

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# At temperature 0.7 the small model sometimes loops on emoji until the context is full: cap answers so that every
# test's answer ends within its timeout on a slow machine.
ANSWER_CAP = {"max-tokens": "160"}
# A server that answers nothing (port 9, discard): where a hostile answer would send what it steals.
ELSEWHERE = "http://127.0.0.2:9"
PASSWORD = "correct horse battery"


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


@dataclass
class Person:
    """Someone signed in on the chat page, in a browser profile of their own; ``http`` carries their session cookie
    and the page's Origin, so it reads and writes as their page does."""

    name: str
    page: Page
    http: httpx.Client

    def close(self) -> None:
        self.http.close()
        self.page.context.close()


def new_account(server: ServerHandle, role: str = "user") -> tuple[str, str]:
    """A new account, unique to the test, and the one-time link that signs its person in."""
    name = f"p-{uuid.uuid4().hex[:12]}"
    made = httpx.post(
        f"{server.base_url}/v1/admin/users",
        json={"name": name, "role": role},
        headers={"Authorization": f"Bearer {server.admin_key}"},
        timeout=30,
    )
    assert made.status_code == 200, made.text
    return name, made.json()["link"]


def session_client(server: ServerHandle, context: BrowserContext) -> httpx.Client:
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    return httpx.Client(base_url=server.base_url, cookies=cookies, headers={"Origin": server.base_url}, timeout=30)


def open_page(
    browser: Browser,
    server: ServerHandle,
    viewport: dict,
    settings: dict | None = None,
    events: PageEvents | None = None,
) -> Person:
    """A new account signed in through its one-time link in a fresh browser profile with the answer cap and
    ``settings`` preset in localStorage; ``events`` records the page's requests and console from before it loads."""
    name, link = new_account(server)
    context = browser.new_context(viewport=viewport)
    preset = {f"chatloop.{k}": v for k, v in {**ANSWER_CAP, **(settings or {})}.items()}
    context.add_init_script(
        f"for (const [k, v] of Object.entries({json.dumps(preset)})) localStorage.setItem(k, JSON.stringify(v));"
    )
    page = context.new_page()
    if events is not None:
        events.watch(page)
    page.goto(link)
    expect(page.locator("#composer")).to_be_visible()
    return Person(name, page, session_client(server, context))


@pytest.fixture
def person(browser: Browser, server: ServerHandle) -> Iterator[Person]:
    signed_in = open_page(browser, server, DESKTOP)
    yield signed_in
    signed_in.close()


def one_answer(question: str, answer: str, completion_id: str) -> dict:
    """A conversation of ``question`` and a stored ``answer`` by the base model, as the page keeps one."""
    return {
        "title": question[:40],
        "messages": [
            {"role": "user", "content": question},
            {
                "role": "assistant",
                "content": answer,
                "completionId": completion_id,
                "choiceIndex": 0,
                "version": "base",
            },
        ],
    }


def show_answer(person: Person, question: str, answer: str, completion_id: str = "chatcmpl-stored") -> str:
    """Store a conversation of one ``answer`` for ``person`` and reload their page, which opens it (the newest): how a
    test shows the page an answer no model would write on request. Returns the conversation's id."""
    conversation_id = uuid.uuid4().hex
    stored = person.http.put(f"/v1/conversations/{conversation_id}", json=one_answer(question, answer, completion_id))
    assert stored.status_code == 200, stored.text
    person.page.reload()
    return conversation_id


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def stored_answer(person: Person, unlike: str | None = None) -> dict:
    """The last message of the person's newest conversation as the server keeps it, once the page has written an
    answer there (other than the one with completion id ``unlike``)."""
    deadline = time.monotonic() + 10
    while True:
        newest = person.http.get("/v1/conversations").json()["data"]
        last = person.http.get(f"/v1/conversations/{newest[0]['id']}").json()["messages"][-1] if newest else {}
        if last.get("role") == "assistant" and last.get("completionId") not in (None, unlike):
            return last
        assert time.monotonic() < deadline, f"the page never stored an answer, last message {last}"
        time.sleep(0.2)


def finished_answer(person: Person) -> dict:
    expect(person.page.locator(".message.assistant .actions").last).to_be_visible(timeout=60_000)
    return stored_answer(person)


def stored_record(server: ServerHandle, completion_id: str) -> dict:
    """The completion's record in Redis, which the server writes just after the stream ends."""
    deadline = time.monotonic() + 10
    while (raw := server.redis.client().get(f"chatloop:completion:{completion_id}")) is None:
        assert time.monotonic() < deadline, "the answer was never recorded"
        time.sleep(0.2)
    return json.loads(raw)


def recorded_answer(server: ServerHandle, account: str) -> str:
    """An answer kept as the chat route keeps one for a signed-in person, without asking the model."""
    record = completion_record(["A stored answer."], key_id=f"account:{account}", user=account)
    server.redis.client().set(keys.completion_key(record.id), record.model_dump_json(), ex=3600)
    return record.id


def test_answer_grows_while_it_streams(person: Person) -> None:
    page = person.page
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
    answer = finished_answer(person)
    assert answer["content"] and answer["version"] == "base"
    expect(page.locator(".message.assistant .version").last).to_have_text("base")
    expect(page.locator("#send")).to_be_visible()


def test_max_tokens_setting_caps_the_answer_and_the_account_is_its_user(browser: Browser, server: ServerHandle) -> None:
    person = open_page(browser, server, DESKTOP, {"max-tokens": "3"})
    send(person.page, "Write a long story about a lighthouse keeper.")
    answer = finished_answer(person)
    person.close()
    record = stored_record(server, answer["completionId"])
    assert record["params"]["max_tokens"] == 3
    assert (record["choices"][0]["finish_reason"], record["choices"][0]["completion_tokens"]) == ("length", 3)
    assert record["user"] == person.name


def test_stop_cancels_the_stream(browser: Browser, server: ServerHandle) -> None:
    person = open_page(browser, server, DESKTOP, {"max-tokens": ""})  # uncapped, so the answer is still streaming
    page = person.page
    send(page, "Write a very long story about a dragon who learns to cook.")
    streaming = page.locator(".message.assistant.streaming .bubble")
    expect(streaming).not_to_have_text("", timeout=30_000)
    page.click("#stop")
    expect(page.locator("#send")).to_be_visible()
    answer = finished_answer(person)
    assert answer["stopped"] is True
    shown = page.locator(".message.assistant .bubble").last.inner_text()
    time.sleep(1.0)
    assert page.locator(".message.assistant .bubble").last.inner_text() == shown, "text kept coming after stop"
    person.close()
    assert stored_record(server, answer["completionId"])["status"] == "aborted"


def test_thumbs_up_lands_in_redis_and_the_rating_is_kept(person: Person, server: ServerHandle) -> None:
    page = person.page
    send(page, "Say hello.")
    answer = finished_answer(person)
    page.locator(".message.assistant .up").last.click()
    expect(page.locator(".message.assistant .up").last).to_have_attribute("aria-pressed", "true")
    events = server.recent_events()
    assert any(e.get("answer") == f"{answer['completionId']}:0" and e.get("rating") == "up" for e in events)
    page.reload()  # the rating comes back from the server's copy of the conversation
    expect(page.locator(".message.assistant .up").last).to_have_attribute("aria-pressed", "true")
    page.locator(".message.assistant .up").last.click()  # a second click clears it
    expect(page.locator(".message.assistant .up").last).to_have_attribute("aria-pressed", "false")


def test_thumbs_down_takes_an_optional_reason(person: Person, server: ServerHandle) -> None:
    page = person.page
    send(page, "Say goodbye.")
    answer = finished_answer(person)
    page.locator(".message.assistant .down").last.click()
    page.fill(".reason input", "too short")
    page.click(".reason button:text('Send')")
    expect(page.locator(".reason")).to_have_count(0)
    events = server.recent_events()
    assert any(e.get("answer") == f"{answer['completionId']}:0" and e.get("reason") == "too short" for e in events)


def test_regenerate_and_choice_make_a_pair(person: Person, server: ServerHandle) -> None:
    page = person.page
    send(page, "Name a planet.")
    first = finished_answer(person)
    page.locator(".message.assistant .regenerate").last.click()
    expect(page.locator(".compare h2")).to_have_text("Which answer is better?", timeout=60_000)
    page.click(".compare .pick-second")
    expect(page.locator(".compare")).to_have_count(0)
    second = stored_answer(person, unlike=first["completionId"])
    assert second["completionId"] != first["completionId"], "the chosen (second) answer continues the conversation"
    pairs = [p for _, p in read_all(server.redis.client()) if p.rejected.completion_id == first["completionId"]]
    assert [(p.rule, p.chosen.completion_id) for p in pairs] == [("comparison", second["completionId"])]


def test_script_in_an_answer_does_not_run(person: Person) -> None:
    hostile = (
        "Here you go:\n\n<script>window.__xss = 'script'</script>\n\n<img src=x onerror=\"window.__xss = 'img'\">\n\n"
        "[click](javascript:window.__xss='link')"
    )
    page = person.page
    show_answer(person, "<b>hi</b><script>window.__xss = 'user'</script>", hostile)
    expect(page.locator(".message.assistant .bubble")).to_contain_text("Here you go")
    page.locator(".message.assistant a").first.click()
    time.sleep(0.5)
    assert page.evaluate("window.__xss") is None
    assert page.locator(".message script").count() == 0
    assert page.locator(".message [onerror]").count() == 0
    assert page.locator(".message.user .bubble").inner_text().startswith("<b>hi</b>")  # shown as text


def test_a_tool_call_in_an_answer_is_shown_as_a_call(person: Person) -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    show_answer(person, "Weather in Paris?", f"Let me check.\n{call}")
    bubble = person.page.locator(".message.assistant .bubble")
    expect(bubble).to_contain_text("Tool call: get_weather")
    expect(bubble.locator("pre")).to_contain_text('"city": "Paris"')
    assert "<tool_call>" not in bubble.inner_text()


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
    person = open_page(browser, server, DESKTOP, events=events)
    page = person.page
    show_answer(person, "hi", hostile)
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
    person.close()


def test_ops_page_runs_under_its_policy_with_the_admin_key(browser: Browser, server: ServerHandle) -> None:
    events = PageEvents()
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    events.watch(page)
    page.goto(server.base_url + "/admin")
    expect(page.locator("#banner")).to_contain_text("Sign in on the chat page as an admin, or enter the admin key")
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
    person = open_page(browser, server, PHONE, events=events)
    page = person.page
    show_answer(person, "y" * 300, wide)
    expect(page.locator(".message.assistant pre")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    assert page.locator("#sidebar").bounding_box()["x"] < 0, "the sidebar folds away at phone width"
    page.click("#toggle-sidebar")
    expect(page.locator("#sidebar")).to_be_in_viewport()
    page.click("#settings summary")  # the account settings fit too
    expect(page.locator("#who")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    assert events.policy_violations == [], "the page itself needs nothing its policy forbids"
    person.close()


# ---- accounts ------------------------------------------------------------------------------------------------


def test_an_admins_link_signs_in_once_and_opens_the_ops_page_without_a_key(
    browser: Browser, server: ServerHandle
) -> None:
    name, link = new_account(server, role="admin")  # what chatloop up prints for the first admin
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(link)
    expect(page.locator("#composer")).to_be_visible()
    assert page.url == server.base_url + "/", "the token leaves the address bar"
    page.click("#settings summary")
    expect(page.locator("#who")).to_have_text(f"Signed in as {name} (admin)")
    expect(page.locator("#api-key")).to_have_count(0)  # the page never asks for a key
    page.goto(server.base_url + "/admin")
    expect(page.locator("#routing")).to_contain_text("Active base")  # the session does what the key did
    expect(page.locator("#banner")).to_be_hidden()
    context.close()

    again = browser.new_context(viewport=DESKTOP)
    page = again.new_page()
    page.goto(link)
    expect(page.locator("#signin-message")).to_have_text(
        "This sign-in link has been used or has expired; ask for a new one."
    )
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator("#composer")).to_be_hidden()
    expect(page.locator("#signup")).to_be_hidden()  # joining is closed on this server
    again.close()


def test_password_sign_in_and_sign_out(browser: Browser, server: ServerHandle) -> None:
    person = open_page(browser, server, DESKTOP)
    page = person.page
    conversation_id = show_answer(person, "Name a colour.", "Blue.")
    page.click("#settings summary")
    expect(page.locator("#current-password")).to_be_hidden()  # a link-made account has no password yet
    page.fill("#new-password", PASSWORD)
    page.click("#password-submit")
    expect(page.locator("#password-message")).to_have_text("Password saved.")
    expect(page.locator("#current-password")).to_be_visible()

    assert person.http.post("/v1/auth/signout").status_code == 200  # the session ends elsewhere
    page.click("#new-chat")  # the page's next request learns it
    expect(page.locator("#signin-message")).to_have_text("Your session has ended: sign in again.")
    expect(page.locator("#conversations li")).to_have_count(0)

    page.fill("#signin-name", person.name)
    page.fill("#signin-password", "not the password")
    page.click("#signin-submit")
    expect(page.locator("#signin-message")).to_have_text("Wrong account name or password.")
    page.fill("#signin-password", PASSWORD)
    page.click("#signin-submit")
    expect(page.locator(".message.assistant .bubble")).to_have_text("Blue.")  # kept on the server, opened again
    kept_here = page.evaluate("Object.keys(localStorage)")
    assert set(kept_here) <= {"chatloop.model", "chatloop.temperature", "chatloop.max-tokens"}, kept_here

    signed_in = session_client(server, page.context)
    assert signed_in.get(f"/v1/conversations/{conversation_id}").status_code == 200
    page.click("#signout")
    expect(page.locator("#signin-message")).to_have_text("Signed out.")
    expect(page.locator("#signin-form")).to_be_visible()
    refused = signed_in.get(f"/v1/conversations/{conversation_id}")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "session_expired")
    signed_in.close()
    person.close()


def test_another_account_sees_none_of_the_conversations_and_cannot_rate_the_answers(
    browser: Browser, server: ServerHandle
) -> None:
    first = open_page(browser, server, DESKTOP)
    completion_id = recorded_answer(server, first.name)
    conversation_id = show_answer(first, "Name a fruit.", "A stored answer.", completion_id)
    first.page.locator(".message.assistant .up").click()
    expect(first.page.locator(".message.assistant .up")).to_have_attribute("aria-pressed", "true")

    second = open_page(browser, server, DESKTOP)
    expect(second.page.locator("#conversations li")).to_have_count(0)
    expect(second.page.locator(".message")).to_have_count(0)
    statuses = second.page.evaluate(
        """async ([conversation, completion]) => {
            const opened = await fetch(`/v1/conversations/${conversation}`);
            const rated = await fetch('/v1/feedback', {method: 'POST', headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({completion_id: completion, choice_index: 0, rating: 'down'})});
            return [opened.status, rated.status];
        }""",
        [conversation_id, completion_id],
    )
    assert statuses == [404, 404]
    first.close()
    second.close()


def test_personal_api_keys_are_shown_once_and_revoked(person: Person, server: ServerHandle) -> None:
    page = person.page
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#settings summary")
    page.fill("#key-name", "laptop")
    page.click("#key-form button")
    expect(page.locator("#new-key-secret")).to_have_value(re.compile(r"^sk-cl-"))
    secret = page.input_value("#new-key-secret")
    expect(page.locator("#keys li")).to_have_count(1)
    bearer = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(server.base_url + "/v1/models", headers=bearer, timeout=30).status_code == 200
    page.reload()
    page.click("#settings summary")
    expect(page.locator("#keys li .key-name")).to_have_text("laptop")
    expect(page.locator("#new-key")).to_be_hidden()  # the secret is never shown again
    page.click("#keys .revoke")
    expect(page.locator("#keys li")).to_have_count(0)
    assert httpx.get(server.base_url + "/v1/models", headers=bearer, timeout=30).status_code == 401


def test_a_person_deletes_all_their_data_from_the_settings(person: Person, server: ServerHandle) -> None:
    page = person.page
    send(page, "Name a fruit.")
    completion_id = finished_answer(person)["completionId"]
    page.locator(".message.assistant .up").click()
    expect(page.locator(".message.assistant .up")).to_have_attribute("aria-pressed", "true")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#settings summary")
    page.click("#erase")
    expect(page.locator("#signin-message")).to_have_text("Your data was deleted, and you were signed out everywhere.")
    store = server.redis.client()
    assert store.get(keys.completion_key(completion_id)) is None
    assert not store.exists(keys.conversations_key(person.name))
    assert person.http.get("/v1/conversations").status_code == 401
