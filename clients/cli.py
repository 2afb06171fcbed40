"""``larr query``: score candidate items for one user in one scene and print them best first.

    larr query --url 127.0.0.1:8001 --user-id 3 --items 1,2,3 \\
        --scene weather="heavy rain" --scene time_slot="late night" [--top 10] [--json]
    larr query ... --tls-ca ca.pem [--tls-cert client.pem --tls-key client.key]    # a server with --tls-*
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from larr.clients.client import DEFAULT_TIMEOUT_S, DEFAULT_URL, LarrClient
from larr.clients.errors import InvalidRequestError, LarrError
from larr.contract import ENSEMBLE_NAME, ITEM_NAMES_PATH


def _item_list(text: str) -> list[int]:
    """``"1,2, 3"`` -> ``[1, 2, 3]`` (argparse type)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        return [int(p) for p in parts if p]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error


def _scene_pair(text: str) -> tuple[str, str]:
    """``weather=heavy rain`` -> ``("weather", "heavy rain")`` (argparse type); the value may contain '='."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected FEATURE=TEXT, got {text!r}")
    return name.strip(), value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def configure_query_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``larr query`` options to ``parser``."""
    parser.add_argument("--url", default=DEFAULT_URL, help="gRPC endpoint of tritonserver (host:port)")
    parser.add_argument("--model", default=ENSEMBLE_NAME, help="ensemble to query")
    parser.add_argument("--user-id", type=int, required=True, help="user id (>= 0)")
    parser.add_argument("--items", type=_item_list, required=True, help="candidate item ids, comma-separated")
    parser.add_argument(
        "--model-repository", type=Path, metavar="DIR",
        help=f"the served repository (as `larr export` wrote it): print item names from its {ITEM_NAMES_PATH}",
    )
    parser.add_argument(
        "--scene",
        type=_scene_pair,
        action="append",
        default=[],
        metavar="FEATURE=TEXT",
        help="one scene feature; repeat for each feature the server publishes",
    )
    parser.add_argument("--top", type=_positive_int, default=None, help="print only the best TOP items")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request")
    tls = parser.add_argument_group("TLS (a server started with larr serve --tls-cert ...); any --tls-* turns it on")
    tls.add_argument("--tls", action="store_true", help="connect over TLS, trusting the system's root certificates")
    tls.add_argument("--tls-ca", type=Path, metavar="FILE", help="PEM CA certificate(s) to trust for the server")
    tls.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM client certificate, for mutual TLS")
    tls.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key of --tls-cert")


def run_query(args: argparse.Namespace) -> int:
    """Run ``larr query``; 0 on success, 2 for an invalid request, 1 for a server error."""
    scene: dict[str, str] = {}
    for name, value in args.scene:
        if name in scene:
            print(f"larr query: scene feature {name!r} given twice", file=sys.stderr)
            return 2
        scene[name] = value
    if (args.tls_cert is None) != (args.tls_key is None):
        print("larr query: --tls-cert and --tls-key go together (the client certificate and its key)", file=sys.stderr)
        return 2
    use_tls = args.tls or any(f is not None for f in (args.tls_ca, args.tls_cert, args.tls_key))
    try:
        client = LarrClient(
            args.url, model_name=args.model, timeout_s=args.timeout, ssl=use_tls,
            root_certificates=args.tls_ca, private_key=args.tls_key, certificate_chain=args.tls_cert,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"larr query: {error}", file=sys.stderr)
        return 2
    try:
        with client:
            ctr = client.score(scene, args.user_id, args.items)
    except InvalidRequestError as error:
        print(f"larr query: invalid request: {error}", file=sys.stderr)
        return 2
    except LarrError as error:
        print(f"larr query: server error: {error}", file=sys.stderr)
        return 1

    # Stable sort: equal scores keep the order the items were given in.
    order = np.argsort(-ctr, kind="stable")[: args.top]
    ranked = [(int(args.items[i]), float(ctr[i])) for i in order]
    names = item_names(args.model_repository) if args.model_repository else []
    name_of = {item: names[item] for item, _ in ranked if 0 <= item < len(names)}  # unknown ids: no name
    if args.json:
        items = [{"item_id": item, "ctr": score, **({"name": name_of[item]} if item in name_of else {})}
                 for item, score in ranked]
        print(json.dumps({"user_id": args.user_id, "scene": scene, "items": items}))
    else:
        print(f"{'rank':>4}  {'item_id':>10}  ctr" + ("       name" if name_of else ""))
        for rank, (item, score) in enumerate(ranked, start=1):
            print(f"{rank:>4}  {item:>10}  {score:.6f}" + (f"  {name_of.get(item, '')}" if name_of else ""))
    return 0


def item_names(repository: Path) -> list[str]:
    """The item names ``larr export`` wrote beside the ensemble (name of id i at i); empty when it wrote none."""
    path = Path(repository) / ITEM_NAMES_PATH
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
