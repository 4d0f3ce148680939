"""``stylecam models``: list the stacks, pull public weights, write tiny bundles, check a bundle.

    stylecam models list
    stylecam models pull sd-turbo
    stylecam models tiny --stack mllm-edit --out DIR [--seed N] [--size WxH] [--lllite]
    stylecam models check PATH_OR_ID

``pull`` fills the Hugging Face hub cache (``HF_HOME``) with configs, tokenizer files and
safetensors weights only, with a progress bar; ``run --backend diffusion`` then finds them
without a network. Every failure is one line on stderr naming what to do.
"""

from __future__ import annotations

import argparse
import sys

# What each stack is, where its weights come from and under which licence: the stack records.
from . import stacks as _stacks


def configure_parser(p: argparse.ArgumentParser) -> None:
    from ..cli_args import size as _size

    sub = p.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(p))
    sub.add_parser("list", help="the stacks, where their weights come from, what is in the cache")
    pull = sub.add_parser("pull", help="download a stack's public weights into the hub cache")
    pull.add_argument("stack", help=" | ".join(_stacks.hub_stacks()))
    tiny = sub.add_parser("tiny", help="write a tiny random-weight bundle (tests, demos without weights)")
    tiny.add_argument("--stack", required=True, choices=list(_stacks.STACKS), help="which stack")
    tiny.add_argument("--out", required=True, help="folder to create (must not exist or be empty)")
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    tiny.add_argument("--size", type=_size, default=None, help="engine size WxH (default 64x64)")
    tiny.add_argument("--lllite", action="store_true", help="add a random ControlNet-LLLite adapter")
    check = sub.add_parser("check", help="check and load a bundle (folder or hub id) on the CPU")
    check.add_argument("bundle", help="bundle folder, hub id or stack name")
    p.set_defaults(models_parser=p)


def command(args) -> int:
    action = getattr(args, "models_command", None)
    if action is None:
        args.models_parser.print_help()
        return 2
    return {"list": _list, "pull": _pull, "tiny": _tiny, "check": _check}[action](args)


def _error(message: str, code: int = 1) -> int:
    print(f"stylecam: error: {message}", file=sys.stderr)
    return code


def _list(args) -> int:
    from .bundle import BundleError, check_bundle, resolve_bundle

    for stack, record in _stacks.STACKS.items():
        print(f"{stack:<10} {record.summary}")
        if record.hub:
            try:
                resolved = resolve_bundle(stack, offline=True)
                check_bundle(resolved)
                where = resolved.paths["unet"].parent
                status = f"in the cache ({where})"
            except BundleError as e:
                status = (f"damaged in the cache, {len(e.damaged)} file(s) (`stylecam models pull {stack}` "
                          f"downloads them again)" if e.damaged else f"not downloaded (`stylecam models pull {stack}`)")
            print(f"{'':<10} weights: {', '.join(record.repos)}; {status}")
        else:
            print(f"{'':<10} weights: none public; pass your own bundle folder with --bundle")
        print(f"{'':<10} licence: {record.licence}")
    print("\n(tiny random-weight bundles for any stack: `stylecam models tiny --stack STACK --out DIR`)")
    return 0


def _pull(args) -> int:
    from .bundle import BundleError, check_bundle, offline_requested, resolve_bundle

    stack = args.stack
    record = _stacks.STACKS.get(stack)
    if record is None or not record.hub:
        if record is not None:
            return _error(record.no_hub, 2)
        return _error(f"unknown stack {stack!r}; pull one of: {', '.join(_stacks.hub_stacks())}", 2)
    repos = record.repos
    if offline_requested():
        try:
            check_bundle(resolve_bundle(stack, offline=True))
        except BundleError as e:
            where = (f"its cached copy is damaged ({', '.join(map(str, e.damaged))})" if e.damaged
                     else "it is not in the cache")
            return _error(f"cannot download {stack} ({', '.join(repos)}): HF_HUB_OFFLINE is set and {where}; "
                          f"unset HF_HUB_OFFLINE on a machine with network access, or pass a bundle folder "
                          f"with --bundle")
        print(f"stylecam: {stack} is already in the cache (HF_HUB_OFFLINE is set, nothing downloaded)")
        return 0
    licence = record.licence
    print(f"stylecam: pulling {stack} from {', '.join(repos)} (safetensors, configs and tokenizer files only)")
    print(f"stylecam: these weights come under the {licence}; by downloading them you accept it "
          f"(https://huggingface.co/{record.hub['unet'][0]})")
    for path in _clear_damaged(stack):
        print(f"stylecam: {path} was damaged; downloading it again")
    try:
        resolved = resolve_bundle(stack, offline=False, progress=True)
        check_bundle(resolved)
    except BundleError as e:
        return _error(f"cannot download {stack}: {e}")
    print(f"stylecam: {stack} is ready; run `stylecam run --backend diffusion --bundle {stack}`")
    return 0


def _clear_damaged(stack: str) -> list:
    """Delete the hub cache's damaged copies of ``stack``'s files (an interrupted download leaves a
    file the hub counts as present), so that the download fetches them again."""
    from pathlib import Path

    from huggingface_hub import constants

    from .bundle import BundleError, check_bundle, resolve_bundle
    from .damage import remove_cached_copies

    try:
        check_bundle(resolve_bundle(stack, offline=True))
    except BundleError as e:  # not in the cache yet (the download fills it), or damaged there
        return remove_cached_copies(e.damaged, Path(constants.HF_HUB_CACHE))
    return []


def _tiny(args) -> int:
    from .bundle import TINY_SIZE, BundleError, bundle_nbytes, write_tiny_bundle

    try:
        out = write_tiny_bundle(args.stack, args.out, seed=args.seed, size=args.size or TINY_SIZE,
                                lllite=args.lllite)
    except (BundleError, OSError, ValueError) as e:
        return _error(str(e))
    print(f"stylecam: wrote a tiny {args.stack} bundle ({bundle_nbytes(out) / 1e6:.1f} MB, random weights, "
          f"seed {args.seed}) to {out}")
    return 0


def _check(args) -> int:
    from .bundle import BundleError, describe, load_bundle

    try:
        bundle = load_bundle(args.bundle)
    except BundleError as e:
        return _error(str(e))
    print(f"stylecam: ok: {describe(bundle)}")
    return 0
