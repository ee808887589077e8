"""Tokenization with the served model's tokenizer, rendering chats exactly as ``/v1/chat/completions`` does, so a
count from ``/tokenize`` is the count the chat endpoint checks against the context length."""

from __future__ import annotations

from vllm.tokenizers import TokenizerLike

from core.config import Settings
from server.answers.generation import pinned_version
from server.chat_api.serving import render_chat
from server.errors import ApiError
from server.tokenize_api.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeRequest,
    TokenizeResponse,
)


class Tokenization:
    def __init__(self, tokenizer: TokenizerLike, settings: Settings, vocab_size: int):
        self.tokenizer = tokenizer
        self.settings = settings
        self.vocab_size = vocab_size

    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        self._check_model(request.model)
        if isinstance(request, TokenizeChatRequest):
            tokens = render_chat(
                self.tokenizer,
                request.messages,
                request.tools,
                self.settings.tools,
                add_generation_prompt=request.add_generation_prompt,
                continue_final_message=request.continue_final_message,
                add_special_tokens=request.add_special_tokens,
            )
        else:
            tokens = self.tokenizer.encode(request.prompt, add_special_tokens=request.add_special_tokens)
        return TokenizeResponse(
            count=len(tokens),
            max_model_len=self.settings.max_model_len,
            tokens=tokens,
            token_strs=self.tokenizer.convert_ids_to_tokens(tokens) if request.return_token_strs else None,
        )

    def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        self._check_model(request.model)
        if len(request.tokens) > self.settings.max_model_len:
            limit = self.settings.max_model_len
            raise ApiError(400, f"tokens takes at most {limit} ids, the model's context length.", param="tokens")
        if request.tokens and max(request.tokens) >= self.vocab_size:
            raise ApiError(400, f"A token id is out of the vocabulary ({self.vocab_size} tokens).", param="tokens")
        return DetokenizeResponse(prompt=self.tokenizer.decode(request.tokens))

    def _check_model(self, model: str | None) -> None:
        """Any of the alias's names, or none (as vLLM allows): every version shares the base model's tokenizer."""
        if model is not None:
            pinned_version(model, self.settings.model_alias)
