"""`pixmesh upload-rules ...`: what every upload of a kind runs (issue 13).

    pixmesh upload-rules set video poster      # every video upload runs the preset `poster`
    pixmesh upload-rules list [--json]
    pixmesh upload-rules delete video

Presets are the gateway's (`pixmesh ops` lists them). Needs a key with the write scope.
"""

from __future__ import annotations

import argparse
from typing import Any

from pixmesh._render import to_json
from pixmesh.client import Client
from pixmesh.common.v1.image_pb2 import Image
from pixmesh.gateway.v1 import gateway_pb2 as gw

_KINDS = ["image", "video"]


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `upload-rules` on the CLI's subparsers."""
    rules = commands.add_parser("upload-rules", help="presets every upload of a kind runs")
    sub = rules.add_subparsers(title="commands", required=True, metavar="COMMAND")
    put = sub.add_parser("set", parents=[common], help="every upload of KIND runs PRESET")
    put.add_argument("kind", choices=_KINDS)
    put.add_argument("preset")
    put.set_defaults(command=_set)
    listing = sub.add_parser("list", parents=[common], help="the rules of your tenant")
    listing.add_argument("--json", action="store_true", help='as JSON: {"rules": [...]}')
    listing.set_defaults(command=_list)
    delete = sub.add_parser("delete", parents=[common], help="uploads of KIND run nothing")
    delete.add_argument("kind", choices=_KINDS)
    delete.set_defaults(command=_delete)


def _line(rule: gw.UploadRule) -> str:
    line = f"{Image.Kind.Name(rule.kind).lower()}\t{rule.preset}"
    if rule.last_error:  # the rule's last job that could not be created
        at = rule.last_error_at.ToJsonString()
        line += f"\tlast error {at} on {rule.last_error_image_id}: {rule.last_error}"
    return line


def _set(client: Client, args: argparse.Namespace) -> int:
    print(_line(client.set_upload_rule(args.kind, args.preset)))
    return 0


def _list(client: Client, args: argparse.Namespace) -> int:
    rules = client.list_upload_rules()
    if args.json:
        print(to_json(gw.ListUploadRulesResponse(rules=rules)))
        return 0
    for rule in rules:
        print(_line(rule))
    return 0


def _delete(client: Client, args: argparse.Namespace) -> int:
    if not client.delete_upload_rule(args.kind):
        print(f"no rule for {args.kind} uploads")
    return 0
