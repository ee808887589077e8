"""HTTP routes of accounts: ``/v1/auth/*`` (signing in and out, joining), ``/v1/account/*`` (a person's password
and own API keys) and the admin's ``/v1/admin/users`` and ``/v1/admin/keys``."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from core.config import Settings
from feedback.erasure import ErasureReport
from server.accounts_api.protocol import (
    AccountList,
    AccountView,
    ApiKeyList,
    ApiKeyRequest,
    ApiKeyView,
    LinkRequest,
    NewAccountRequest,
    NewApiKey,
    PasswordRequest,
    PersonalKeyRequest,
    SessionView,
    SigninLinkView,
    SigninRequest,
    SignupRequest,
    TrainRequest,
)
from server.auth import same_origin
from server.dependencies import AccountServiceDep, AdminDep, CallerDep, ErasuresDep, SettingsDep, get_admin
from server.identity.accounts import NAME_PATTERN, Account
from server.identity.api_keys import ManagedKey
from server.identity.sessions import COOKIE
from server.unicode_body import UnicodeBodyRoute

auth = APIRouter(prefix="/v1/auth", route_class=UnicodeBodyRoute, dependencies=[Depends(same_origin)])
account = APIRouter(prefix="/v1/account", route_class=UnicodeBodyRoute)
admin = APIRouter(prefix="/v1/admin", route_class=UnicodeBodyRoute, dependencies=[Depends(get_admin)])

KeyName = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
AccountName = Annotated[str, Path(pattern=NAME_PATTERN.pattern)]


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _signed_in(request: Request, response: Response, token: str, settings: Settings) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(settings.accounts.session_days * 86400),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _session(account: Account | None, settings: Settings) -> SessionView:
    return SessionView(account=AccountView.of(account) if account else None, joining=settings.accounts.joining)


@auth.get("/session")
async def get_session(request: Request, service: AccountServiceDep, settings: SettingsDep) -> SessionView:
    """Public: who this browser is signed in as, if anyone, and whether strangers may join."""
    return _session(await service.signed_in(request.cookies.get(COOKIE)), settings)


@auth.post("/signin")
async def signin(
    body: SigninRequest, request: Request, response: Response, service: AccountServiceDep, settings: SettingsDep
) -> SessionView:
    account, token = await service.signin(body.name, body.password, _address(request))
    _signed_in(request, response, token, settings)
    return _session(account, settings)


@auth.post("/link")
async def redeem_link(
    body: LinkRequest, request: Request, response: Response, service: AccountServiceDep, settings: SettingsDep
) -> SessionView:
    account, token = await service.redeem_link(body.token, _address(request))
    _signed_in(request, response, token, settings)
    return _session(account, settings)


@auth.post("/signup")
async def signup(
    body: SignupRequest, request: Request, response: Response, service: AccountServiceDep, settings: SettingsDep
) -> SessionView:
    """With joining ``open``, the new account is signed in; with ``approval``, it waits (status ``pending``)."""
    account, token = await service.signup(body.name, body.password, _address(request))
    if token is not None:
        _signed_in(request, response, token, settings)
    view = _session(account if token else None, settings)
    if token is None:
        response.status_code = 202
        view.account = AccountView.of(account)
    return view


@auth.post("/signout")
async def signout(
    request: Request, response: Response, service: AccountServiceDep, settings: SettingsDep
) -> SessionView:
    if token := request.cookies.get(COOKIE):
        await service.signout(token)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return _session(None, settings)


@account.post("/password")
async def change_password(body: PasswordRequest, caller: CallerDep, service: AccountServiceDep) -> AccountView:
    return AccountView.of(await service.change_password(caller, body.current_password, body.new_password))


@account.post("/erase")
async def erase_own_data(
    response: Response, caller: CallerDep, service: AccountServiceDep, erasures: ErasuresDep
) -> ErasureReport:
    """Everything this person asked and taught, their stored conversations and their sessions: they are signed out
    everywhere. Only from a signed-in page, so that a leaked key cannot wipe a person's history."""
    account = await service.own_account(caller, session=True)
    report = await erasures.of_account(account.name, caller)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return report


@account.get("/keys")
async def list_personal_keys(caller: CallerDep, service: AccountServiceDep) -> ApiKeyList:
    return ApiKeyList(data=[ApiKeyView.of(k) for k in await service.personal_keys(caller)])


@account.post("/keys")
async def make_personal_key(body: PersonalKeyRequest, caller: CallerDep, service: AccountServiceDep) -> NewApiKey:
    key, secret = await service.make_personal_key(caller, body.name)
    return NewApiKey(**ApiKeyView.of(key).model_dump(), key=secret)


@account.delete("/keys/{name}", status_code=204)
async def revoke_personal_key(name: KeyName, caller: CallerDep, service: AccountServiceDep) -> Response:
    await service.revoke_personal_key(caller, name)
    return Response(status_code=204)


@admin.get("/users")
async def list_accounts(service: AccountServiceDep) -> AccountList:
    return AccountList(data=[AccountView.of(a) for a in await service.accounts()])


def _link_view(request: Request, account: Account, token: str, settings: Settings) -> SigninLinkView:
    return SigninLinkView(
        account=AccountView.of(account),
        link=f"{str(request.base_url).rstrip('/')}/#signin={token}",
        expires_in=int(settings.accounts.link_hours * 3600),
    )


@admin.post("/users")
async def add_account(
    body: NewAccountRequest, request: Request, caller: AdminDep, service: AccountServiceDep, settings: SettingsDep
) -> SigninLinkView:
    """The new account and a one-time link that signs its person in; they may set a password once in."""
    account, token = await service.add_account(caller, body.name, body.role)
    return _link_view(request, account, token, settings)


@admin.post("/users/{name}/link")
async def new_link(
    name: AccountName, request: Request, caller: AdminDep, service: AccountServiceDep, settings: SettingsDep
) -> SigninLinkView:
    account, token = await service.new_link(caller, name)
    return _link_view(request, account, token, settings)


@admin.post("/users/{name}/approve")
async def approve_account(name: AccountName, caller: AdminDep, service: AccountServiceDep) -> AccountView:
    return AccountView.of(await service.approve(caller, name))


@admin.post("/users/{name}/train")
async def set_account_train(
    name: AccountName, body: TrainRequest, caller: AdminDep, service: AccountServiceDep
) -> AccountView:
    """Whether the person's feedback may become training data (from the next gesture, on every replica within the
    reconcile period)."""
    return AccountView.of(await service.set_train(caller, name, body.train))


@admin.delete("/users/{name}", status_code=204)
async def remove_account(name: AccountName, caller: AdminDep, service: AccountServiceDep) -> Response:
    await service.remove_account(caller, name)
    return Response(status_code=204)


@admin.get("/keys")
async def list_api_keys(service: AccountServiceDep) -> ApiKeyList:
    return ApiKeyList(data=[ApiKeyView.of(k) for k in await service.api_keys()])


@admin.post("/keys")
async def make_api_key(body: ApiKeyRequest, caller: AdminDep, service: AccountServiceDep) -> NewApiKey:
    key = ManagedKey(created=time.time(), **body.model_dump())
    secret = await service.make_api_key(caller, key)
    return NewApiKey(**ApiKeyView.of(key).model_dump(), key=secret)


@admin.delete("/keys/{name}", status_code=204)
async def revoke_api_key(
    name: KeyName,
    caller: AdminDep,
    service: AccountServiceDep,
    owner: Annotated[str | None, Query(max_length=64, description="For a person's key: their account.")] = None,
) -> Response:
    await service.revoke_api_key(caller, name, owner)
    return Response(status_code=204)
