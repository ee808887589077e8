"""``chatloop users`` and ``chatloop keys``: the admin's side of accounts and API keys, through the server's admin
API (as ``chatloop policy`` does), so that every replica sees the change and the server logs who made it."""

from __future__ import annotations

import argparse
from datetime import datetime

from client.ops import AdminClient


def _when(seconds: float | None) -> str:
    return "-" if seconds is None else datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def _print_link(view: dict) -> None:
    hours = view["expires_in"] / 3600
    print(
        f"{view['account']['name']} ({view['account']['role']}): send them this link, it works once within {hours:g} h:"
    )
    print(f"  {view['link']}")


def run_users(client: AdminClient, args: argparse.Namespace) -> None:
    if args.action == "add":
        _print_link(client.call("POST", "/users", {"name": args.name, "role": "admin" if args.admin else "user"}))
    elif args.action == "link":
        _print_link(client.call("POST", f"/users/{args.name}/link"))
    elif args.action == "approve":
        client.call("POST", f"/users/{args.name}/approve")
        print(f"{args.name} may sign in now")
    elif args.action == "remove":
        client.call("DELETE", f"/users/{args.name}")
        print(f"{args.name} removed, with their sessions, keys and conversations")
    elif args.action in ("teach", "mute"):
        shown = client.call("POST", f"/users/{args.name}/train", {"train": args.action == "teach"})
        print(f"{args.name}'s feedback {'may' if shown['train'] else 'may not'} become training data")
    elif args.action == "forget":
        _print_erasure(args.name, client.call("POST", "/erasures", {"account": args.name}))
    else:
        print(f"{'name':<20}{'role':<7}{'status':<9}{'password':<10}{'teaches':<9}created")
        for account in client.call("GET", "/users")["data"]:
            password, teaches = ("yes" if account[flag] else "no" for flag in ("has_password", "train"))
            print(
                f"{account['name']:<20}{account['role']:<7}{account['status']:<9}{password:<10}{teaches:<9}"
                f"{_when(account['created'])}"
            )


def _print_erasure(name: str, report: dict) -> None:
    print(
        f"{name}: erased {report['completions']} answers, {report['conversations']} conversations' feedback, "
        f"{report['events']} events and {report['pairs']} pairs; signed out everywhere"
    )
    for version, pairs in report["versions"].items():
        print(f"  {version} was trained on {pairs} of those pairs: consider `chatloop policy retire {version}`")


def run_keys(client: AdminClient, args: argparse.Namespace) -> None:
    if args.action == "create":
        limits = {name: getattr(args, name) for name in ("chat_per_minute", "max_concurrent", "pairs_per_hour")}
        expires = args.expires.timestamp() if args.expires else None
        role = "admin" if args.admin else "user"
        body = {"name": args.name, "role": role, "expires_at": expires, "train": args.train, **limits}
        made = client.call("POST", "/keys", body)
        print(f"{made['name']}: {made['key']}")
        print("  shown this once: only its hash is kept")
    elif args.action == "revoke":
        params = f"?owner={args.owner}" if args.owner else ""
        client.call("DELETE", f"/keys/{args.name}{params}")
        print(f"{args.name} revoked: every server refuses it within ROLLOUT__RECONCILE_SECONDS")
    else:
        print(f"{'name':<20}{'owner':<14}{'role':<7}{'chat/min':<10}{'at once':<9}{'pairs/h':<9}{'train':<7}expires")
        for key in client.call("GET", "/keys")["data"]:
            cells = [
                key[name] or "-" for name in ("owner", "role", "chat_per_minute", "max_concurrent", "pairs_per_hour")
            ]
            print(
                f"{key['name']:<20}{cells[0]:<14}{cells[1]:<7}{cells[2]:<10}{cells[3]:<9}{cells[4]:<9}"
                f"{'yes' if key['train'] else 'no':<7}{_when(key['expires_at'])}"
            )
