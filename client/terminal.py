"""The terminal chat client, ``chatloop chat``: a conversation with a chatloop server, taught with slash-commands.

It speaks only the public API (chat completions through the official OpenAI SDK, gestures through
``/v1/feedback``), so it is also a worked example of what any client must do for its feedback to count: send the
same ``user`` with every chat and every gesture (only the receiver of an answer may rate it), and repeat an
answer's messages, with ``metadata.regenerate_of``, when asking for another answer in its place.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from client.control_sequences import printable
from client.errors import REQUEST_ERRORS, ClientError, describe

PROMPT = "you> "
REQUEST_TIMEOUT_S = 120.0
HELP = """\
  /up              rate the last answer up
  /down [reason]   rate the last answer down, optionally saying why
  /regen           another answer to the last message; then pick the better of the two
  /new             start a new conversation
  /help            this list
  /quit            leave (Ctrl-D too); Ctrl-C stops an answer being written"""


@dataclass(frozen=True)
class Answer:
    completion_id: str
    text: str
    version: str
    """The policy version that wrote it (``system_fingerprint``): what the feedback will be credited to."""

    def pointer(self) -> dict[str, Any]:
        return {"completion_id": self.completion_id, "choice_index": 0}


def muted(text: str) -> str:
    """Dim on a terminal, so that tags stay apart from the answer; plain when piped, so that logs stay clean."""
    return f"\033[2m{text}\033[0m" if sys.stdout.isatty() else text


def pick_better() -> Literal["1", "2", "s"]:
    """Ask until the reply is 1, 2 or s: a mistyped key must not send a comparison the user did not mean."""
    while True:
        reply = input("Which answer is better? [1/2/s(ame)] ").strip().lower()
        if reply in ("1", "2"):
            return reply
        if reply in ("s", "same"):
            return "s"


class Terminal:
    """One conversation held in memory, and the answer that the feedback commands refer to.

    ``last`` is always the final assistant message of ``messages``: an answer that failed or was stopped leaves
    both untouched, so that ``/up`` and ``/regen`` never point at an answer the conversation does not contain.
    """

    def __init__(self, url: str, key: str, user: str, model: str, max_tokens: int) -> None:
        self.user = user
        self.model = model
        self.max_tokens = max_tokens
        # No retries: a retried chat request is a second answer, recorded, that the user never saw.
        self.openai = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=REQUEST_TIMEOUT_S)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT_S)
        self.messages: list[ChatCompletionMessageParam] = []
        self.last: Answer | None = None

    def close(self) -> None:
        self.openai.close()
        self.http.close()

    def handle(self, line: str) -> bool:
        """Act on one line typed at the prompt; False means leave."""
        command, _, rest = line.partition(" ")
        match command:
            case "":
                pass
            case "/quit":
                return False
            case "/help":
                print(HELP)
            case "/new":
                self.messages, self.last = [], None
                print(muted("[new conversation]"))
            case "/up":
                self.rate("up", None)
            case "/down":
                self.rate("down", rest.strip() or None)
            case "/regen":
                self.regenerate()
            case _ if command.startswith("/"):
                raise ClientError(f"unknown command {command}: /help lists them")
            case _:
                self.say(line)
        return True

    def say(self, text: str) -> None:
        messages: list[ChatCompletionMessageParam] = [*self.messages, {"role": "user", "content": text}]
        answer = self._stream(messages, metadata=None, label="")
        if answer is not None:
            self._keep(messages, answer)

    def rate(self, rating: Literal["up", "down"], reason: str | None) -> None:
        answer = self._last()
        self._feedback({"completion_id": answer.completion_id, "choice_index": 0, "rating": rating, "reason": reason})
        print(muted(f"[rated {rating}]"))

    def regenerate(self) -> None:
        """A second answer to the same messages, then the user's choice between the two, which the conversation
        goes on with (the first one when they are the same)."""
        first = self._last()
        messages = self.messages[:-1]  # the server checks that a regeneration repeats its original's messages
        second = self._stream(messages, metadata={"regenerate_of": first.completion_id}, label="(2) ")
        if second is None:
            return
        choice = pick_better()
        if choice == "s":
            return
        chosen, rejected = (first, second) if choice == "1" else (second, first)
        self._keep(messages, chosen)  # first: the user's pick stands even if the comparison cannot be sent
        self._feedback({"chosen": chosen.pointer(), "rejected": rejected.pointer()})
        print(muted(f"[answer {choice} preferred]"))

    def _stream(
        self, messages: list[ChatCompletionMessageParam], metadata: dict[str, str] | None, label: str
    ) -> Answer | None:
        """Print an answer as it is written, after ``label``; None when the user stopped it with Ctrl-C. It is printed
        without the control sequences it may carry, which the terminal would obey; the answer kept, and sent back with
        the conversation, is the text as the server wrote it.

        Closing the stream is what stops the server's generation (it aborts the engine request when the client
        disconnects), so an answer nobody reads costs nothing more.
        """
        completion_id, version, parts, held = "", "", [], ""
        if label:
            print(muted(label), end="")
        try:
            with self.openai.chat.completions.create(
                model=self.model,
                messages=messages,
                stream=True,
                user=self.user,
                max_tokens=self.max_tokens,
                metadata=metadata,
            ) as stream:
                for chunk in stream:
                    completion_id, version = chunk.id, chunk.system_fingerprint or version
                    text = chunk.choices[0].delta.content if chunk.choices else None
                    if text:
                        parts.append(text)
                        shown, held = printable(held, text)
                        print(shown, end="", flush=True)
        except KeyboardInterrupt:
            print(muted(" [stopped]"))
            return None
        except REQUEST_ERRORS:
            if label or parts:
                print()  # the error line comes after what was written, not glued to it
            raise
        print()
        print(muted(f"[{version}]"))
        return Answer(completion_id=completion_id, text="".join(parts), version=version)

    def _keep(self, messages: list[ChatCompletionMessageParam], answer: Answer) -> None:
        self.messages = [*messages, {"role": "assistant", "content": answer.text}]
        self.last = answer

    def _last(self) -> Answer:
        if self.last is None:
            raise ClientError("no answer yet in this conversation")
        return self.last

    def _feedback(self, body: dict[str, Any]) -> None:
        """Send one gesture as the user who received the answer: the server refuses any other as unknown."""
        self.http.post("/v1/feedback", json={**body, "user": self.user}).raise_for_status()


def run(url: str, key: str, user: str, model: str, max_tokens: int) -> None:
    """The prompt loop: a failure is one line and the conversation goes on; only /quit and end of input leave."""
    terminal = Terminal(url, key, user, model, max_tokens)
    print(muted(f"chatloop at {url} as {user}; /help lists the commands"))
    try:
        while True:
            try:
                if not terminal.handle(input(PROMPT).strip()):
                    return
            except EOFError:
                print()
                return
            except KeyboardInterrupt:
                print()
            except (*REQUEST_ERRORS, ClientError) as exc:
                print(f"error: {describe(exc)}")
    finally:
        terminal.close()
