"""``chatloop policy``: the operators' commands, through the server's admin API (so that every change is audited
under the admin key and takes effect on the server that answers before the command returns). A failed call
raises; ``chatloop`` turns it into one line (``client/errors.py``)."""

from __future__ import annotations

import json
from datetime import datetime

import httpx

TIMEOUT_S = 120.0


class AdminClient:
    def __init__(self, url: str, key: str):
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_S)

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        response = self.http.request(method, f"/v1/admin{path}", json=body).raise_for_status()
        return {} if response.status_code == 204 else response.json()


def routing_line(routing: dict) -> str:
    line = f"active {routing['active']}"
    if routing.get("canary"):
        line += f", canary {routing['canary']} for {routing['canary_percent']:g}% of users"
    return line


def print_versions(listing: dict) -> None:
    print(f"routing: {routing_line(listing['routing']['stored'])}")
    print(f"{'version':<9}{'state':<11}{'parent':<9}{'created':<21}{'gate':<26}lineage")
    for version in listing["data"]:
        created = datetime.fromtimestamp(version["created"]).strftime("%Y-%m-%d %H:%M:%S")
        gate = "passed" if version["gate"].get("passed") else "; ".join(version["gate"].get("reasons", [])) or "-"
        lineage = " <- ".join(version["lineage"])
        print(
            f"{version['id']:<9}{version['state']:<11}{version['parent']:<9}{created:<21}{gate[:25]:<26}{lineage}"
            f"{_notes(version)}"
        )


def _notes(version: dict) -> str:
    notes = ["pinnable by everyone"] if version.get("pinnable") else []
    if version.get("erased_pairs"):
        notes.append(f"TRAINED ON {version['erased_pairs']} ERASED PAIRS")
    if version.get("load_errors"):
        notes.append("LOAD ERROR: " + version["load_errors"]["error"])
    return "".join(f"  {note}" for note in notes)


def run(client: AdminClient, action: str, version: str | None, canary: float | None, reason: str) -> None:
    if action == "list":
        print_versions(client.call("GET", "/versions"))
    elif action == "show":
        print(json.dumps(client.call("GET", f"/versions/{version}"), indent=2))
    elif action in ("pinnable", "unpinnable"):
        body = {"pinnable": action == "pinnable", "reason": reason}
        shown = client.call("POST", f"/versions/{version}/pinnable", body)
        who = "every caller" if shown["pinnable"] else "admins only"
        print(f"{version} may be pinned as chatloop@{version} by {who}")
    else:
        body = {"reason": reason}
        path = {
            "promote": f"/versions/{version}/promote",
            "retire": f"/versions/{version}/retire",
            "rollback": "/rollback",
        }[action]
        if action == "promote" and canary is not None:
            body["canary_percent"] = canary
        routing = client.call("POST", path, body)
        print(f"routing: {routing_line(routing['stored'])}")
