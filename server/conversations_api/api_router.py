"""HTTP routes of a person's conversations, ``/v1/conversations``: list, open, save, rename, delete. Only an
account (signed in, or one of its own keys) has conversations; each sees its own alone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from server.auth import Caller
from server.conversations_api.protocol import ConversationBody, ConversationList, RenameRequest
from server.dependencies import CallerDep, ConversationsDep
from server.errors import ApiError
from server.unicode_body import UnicodeBodyRoute

router = APIRouter(prefix="/v1/conversations", route_class=UnicodeBodyRoute)

ConversationId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _account(caller: Caller) -> str:
    if caller.account is None:
        raise ApiError(403, "Conversations belong to accounts: sign in on the chat page.", code="account_required")
    return caller.account


@router.get("")
async def list_conversations(caller: CallerDep, conversations: ConversationsDep) -> ConversationList:
    return ConversationList(data=await conversations.list(_account(caller)))


@router.get("/{conversation_id}")
async def get_conversation(
    conversation_id: ConversationId, caller: CallerDep, conversations: ConversationsDep
) -> dict[str, object]:
    return await conversations.get(_account(caller), conversation_id)


@router.put("/{conversation_id}")
async def put_conversation(
    conversation_id: ConversationId, body: ConversationBody, caller: CallerDep, conversations: ConversationsDep
) -> dict[str, object]:
    return await conversations.put(_account(caller), {**body.model_dump(), "id": conversation_id})


@router.patch("/{conversation_id}")
async def rename_conversation(
    conversation_id: ConversationId, body: RenameRequest, caller: CallerDep, conversations: ConversationsDep
) -> dict[str, object]:
    account = _account(caller)
    conversation = await conversations.get(account, conversation_id)
    return await conversations.put(account, {**conversation, "title": body.title})


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: ConversationId, caller: CallerDep, conversations: ConversationsDep
) -> Response:
    await conversations.delete(_account(caller), conversation_id)
    return Response(status_code=204)
