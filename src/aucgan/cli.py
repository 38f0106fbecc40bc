"""The ``aucgan`` command line.

Every command turns a user mistake (bad option, bad config, unreadable file) into one line on stderr and
exit status 2; it never prints a traceback for those.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from aucgan import __version__

log = logging.getLogger("aucgan")


class UsageError(Exception):
    """A mistake in what the user asked for; printed as one line, exit status 2."""


def _parse_assignments(items: Sequence[str], what: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            values[name.strip()] = number
        except ValueError:
            raise UsageError(f"{what} {item!r} is not NAME=NUMBER (for example {what} AU12=0.8)") from None
    return values


def _parse_vector(text: str, what: str) -> tuple[float, float, float]:
    try:
        x, y, z = (float(part) for part in text.split(","))
        if not all(math.isfinite(v) for v in (x, y, z)):
            raise ValueError
    except ValueError:
        raise UsageError(f"{what} {text!r} is not three comma-separated numbers, e.g. 0.3,0.4,1") from None
    return x, y, z


def _cmd_render(args: argparse.Namespace) -> int:
    import torch

    from aucgan.au import au_index
    from aucgan.config import Config, load_config, save_config
    from aucgan.face_model import ProceduralFaceModel
    from aucgan.preview import FaceScene, render_scene, write_scene

    cfg = load_config(Config, args.config, args.overrides)
    model = ProceduralFaceModel(n_identity=cfg.face_model.n_identity)
    expression = torch.zeros(1, model.n_expression)
    for name, value in _parse_assignments(args.au, "--au").items():
        try:
            expression[0, au_index(name)] = value
        except ValueError as error:
            raise UsageError(str(error)) from None
    shape = torch.zeros(1, model.n_shape)
    if args.identity_seed is not None:
        shape = torch.randn(1, model.n_shape, generator=torch.Generator().manual_seed(args.identity_seed))
    for name, value in _parse_assignments(args.identity, "--identity").items():
        if name not in model.identity_names:
            raise UsageError(f"--identity {name!r} unknown; valid: {', '.join(model.identity_names)}")
        shape[0, model.identity_names.index(name)] = value
    for option in ("pitch", "yaw", "roll", "jaw"):
        if not math.isfinite(getattr(args, option)):
            raise UsageError(f"--{option} must be a finite number of degrees, got {getattr(args, option)}")
    radians = [math.radians(a) for a in (args.pitch, args.yaw, args.roll)]
    scene = FaceScene(
        shape=shape,
        expression=expression,
        pose=torch.tensor([[*radians, math.radians(args.jaw), 0.0, 0.0]]),
        light_direction=torch.tensor([_parse_vector(args.light, "--light")]),
    )
    out = Path(args.out)
    result = render_scene(
        model,
        scene,
        image_size=cfg.render.image_size,
        uv_size=cfg.render.uv_size,
        background=cfg.render.background,
    )
    written = write_scene(model, result, out)
    save_config(cfg, out)
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aucgan",
        description="Detailed 3D faces from single images, with wrinkles driven by Action Units.",
    )
    parser.add_argument("--version", action="version", version=f"aucgan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = sub.add_parser(
        "render",
        help="render the built-in face for given AU intensities, pose and light to PNG + OBJ",
        description="Render the built-in face model (no assets needed) to an image and a textured mesh.",
    )
    render.add_argument("--out", required=True, help="output folder (created)")
    render.add_argument(
        "--au",
        action="append",
        default=[],
        metavar="AU=I",
        help="AU intensity in [0, 1], repeatable: --au AU6=1 --au AU12=1",
    )
    render.add_argument(
        "--identity",
        action="append",
        default=[],
        metavar="NAME=C",
        help="identity component in standard deviations, e.g. --identity nose_protrusion=2",
    )
    render.add_argument("--identity-seed", type=int, help="draw a random identity from this seed")
    render.add_argument(
        "--yaw", type=float, default=0.0, help="head yaw in degrees (positive: turns to its left)"
    )
    render.add_argument(
        "--pitch", type=float, default=0.0, help="head pitch in degrees (positive: looks down)"
    )
    render.add_argument("--roll", type=float, default=0.0, help="head roll in degrees")
    render.add_argument("--jaw", type=float, default=0.0, help="jaw opening in degrees")
    render.add_argument(
        "--light",
        default="0.3,0.4,1",
        help="direction towards the light, x,y,z (default %(default)s); "
        "with a negative x write it with '=': --light=-1,0,1",
    )
    render.add_argument("--config", help="YAML config (default: built-in defaults)")
    render.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. render.image_size=512"
    )
    render.set_defaults(func=_cmd_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    from aucgan.config import ConfigError

    try:
        return args.func(args)
    except (UsageError, ConfigError) as error:
        print(f"aucgan {args.command}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"aucgan {args.command}: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
