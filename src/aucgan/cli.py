"""The ``aucgan`` command line.

Every command turns a user mistake (bad option, bad config, unreadable file) into one line on stderr and
exit status 2; it never prints a traceback for those.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from aucgan import __version__

log = logging.getLogger("aucgan")


class UsageError(Exception):
    """A mistake in what the user asked for; printed as one line, exit status 2."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a command; printed as one line (what was kept), exit status 128 + the
    signal's number (the shell's status for a process a signal ended)."""

    def __init__(self, message: str, signal_number: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_status = 128 + signal_number


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """Inside the block SIGTERM (a scheduler, ``timeout``, ``kill``) interrupts as Ctrl-C does; yields a
    one-item list holding the signal that interrupted (SIGINT unless SIGTERM did)."""
    received = [int(signal.SIGINT)]

    def interrupt(number: int, frame: object) -> None:
        received[0] = number
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def split_counts(n: int) -> dict[str, int]:
    """Samples per split for ``n`` in all: 80 % train, 10 % val, the rest test (as the identities split)."""
    train, val = round(0.8 * n), round(0.1 * n)
    return {"train": train, "val": val, "test": n - train - val}


def _cmd_synth(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from aucgan.build import world_parameters
    from aucgan.config import Config, load_config, save_config
    from aucgan.data.shards import SyntheticFaces, write_dataset
    from aucgan.data.sheets import au_sweep_sheet, contact_sheet

    if args.n < 0:
        raise UsageError(f"--n must be >= 0, got {args.n}")
    if args.n == 0 and not args.preview:
        raise UsageError("nothing to do: give --n N samples to write, and/or --preview")
    cfg = load_config(
        Config, args.config, [*args.overrides, *([f"seed={args.seed}"] if args.seed is not None else [])]
    )
    torch.set_num_threads(max(1, torch.get_num_threads() // max(1, cfg.synth.workers)))
    parameters = world_parameters(cfg)
    out = Path(args.out)
    save_config(cfg, out)
    if args.n:
        with tqdm(total=args.n, desc="synth", unit="sample") as bar, _sigterm_as_ctrl_c() as received:
            try:
                manifest = write_dataset(
                    out,
                    parameters,
                    split_counts(args.n),
                    cfg.synth.shard_size,
                    cfg.synth.workers,
                    progress=bar.update,
                )
            except KeyboardInterrupt:
                raise Interrupted(
                    f"interrupted with {bar.n} of {args.n} samples generated; the shards written in {out} "
                    "are kept, and the same command continues from them",
                    received[0],
                ) from None
        log.info("wrote %d samples to %s (manifest %s)", args.n, out, manifest.name)
    if args.preview:
        dataset = SyntheticFaces(parameters, "train", 24)
        sheet = contact_sheet(
            [dataset[i] for i in range(len(dataset))], out / "preview" / "contact_sheet.png"
        )
        closeup = dataclasses.replace(parameters, image_size=max(384, parameters.image_size))
        sweep = au_sweep_sheet(closeup.world(), out / "preview" / "au_sweep.png")
        log.info("wrote %s and %s", sheet, sweep)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from aucgan.config import Config, load_config
    from aucgan.train.run import train

    cfg = load_config(Config, args.config, args.overrides)
    result = train(args.stage, cfg, args.config)
    if result.metrics:
        shown = ", ".join(
            f"{name}={value:.4g}" for name, value in sorted(result.metrics.items()) if name.startswith("val/")
        )
        log.info("validation: %s", shown)
    log.info("checkpoint: %s (logs, images and config.yaml in %s)", result.last_checkpoint, result.out_dir)
    if result.stopped_at is not None:
        log.info(
            "stopped after step %d of %d (trainer.stop_after); the same command with resume=true and "
            "trainer.stop_after=0 finishes it",
            result.stopped_at,
            cfg.trainer.steps,
        )
    return 0


def _reconstructor(args: argparse.Namespace, world_seed: bool = False):
    """The reconstructor the arguments name. Without ``--config`` the coarse settings are the defaults with
    the ``coarse.*`` overrides, and the backend ``auto`` (MediaPipe for photos when installed) unless one is
    named. With ``world_seed`` (``aucgan evaluate``) the faces are the synthetic world's: the weights'
    settings unless overridden, ``auto`` the coarse network, and a ``seed=N`` override picks the world the
    faces are drawn from (other identities, the weights unchanged)."""
    import dataclasses

    from aucgan.config import Config, load_config
    from aucgan.reconstruct import Reconstructor
    from aucgan.stages.landmark_fit import resolve_backend

    weights = args.weights
    overrides = list(args.overrides)
    seeds = [item for item in overrides if item.startswith("seed=")] if world_seed else []
    if seeds:
        overrides = [item for item in overrides if not item.startswith("seed=")]
        seed = load_config(Config, None, seeds[-1:]).seed
        args = argparse.Namespace(**{**vars(args), "overrides": overrides})
        reconstructor = _reconstructor(args, world_seed=True)
        reconstructor.cfg = dataclasses.replace(reconstructor.cfg, seed=seed)
        return reconstructor
    if args.config is not None:
        cfg = load_config(Config, args.config, overrides)
        if weights is None and cfg.face_model.kind == "flame":
            return Reconstructor.from_assets(cfg, args.device, source=f"config {args.config}")
        weights = weights or cfg.assets.weights or cfg.assets.detail or None
        coarse, refine = cfg.coarse, cfg.refine
    else:
        others = [item for item in overrides if not item.startswith(("coarse.", "refine."))]
        if others:
            raise UsageError(
                f"{others[0]}: without --config only coarse.* and refine.* settings (and, for evaluate, "
                "seed=) can be given (the weights hold the rest); e.g. coarse.backend=mediapipe"
            )
        given = load_config(Config, None, overrides)
        coarse = given.coarse if any(item.startswith("coarse.") for item in overrides) else None
        refine = given.refine if any(item.startswith("refine.") for item in overrides) else None
    if world_seed:
        if coarse is not None and coarse.backend == "auto":
            backend = resolve_backend(coarse, "procedural", photos=False).backend
            coarse = dataclasses.replace(coarse, backend=backend)
    elif args.config is None and not any(item.startswith("coarse.backend=") for item in overrides):
        # The defaults, not the weights' stored settings (trained with another max_faces, say).
        coarse = load_config(Config, None, ["coarse.backend=auto", *overrides]).coarse
    return Reconstructor.load(weights, device=args.device, coarse_settings=coarse, refine_settings=refine)


def _cmd_pack(args: argparse.Namespace) -> int:
    from aucgan.config import Config, load_config
    from aucgan.reconstruct import Reconstructor
    from aucgan.weights import save_weights

    cfg = load_config(Config, args.config, args.overrides)
    checkpoint = args.checkpoint or cfg.assets.detail
    if not checkpoint:
        raise UsageError("give the detail checkpoint: --checkpoint PATH or assets.detail in the config")
    reconstructor = Reconstructor.load(checkpoint)
    path = save_weights(
        args.out,
        {"coarse": reconstructor.coarse, "detail": reconstructor.detail},
        reconstructor.cfg,
        provenance=args.provenance,
        half=not args.float32,
    )
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return 0


def _failure_summary(failed: Sequence[tuple[str, str]], total: int) -> None:
    print(f"{len(failed)} of {total} inputs failed:", file=sys.stderr)
    for _, message in failed:
        print(f"  {message}", file=sys.stderr)


def _take_shard(args: argparse.Namespace):
    """The shard this process reconstructs (``--shard``, else SLURM's or torchrun's environment) and why;
    ``(None, "")`` for all inputs."""
    import os

    from aucgan.sharding import ShardError, parse_shard, shard_from_environment

    try:
        if args.shard is not None:
            return parse_shard(args.shard), "--shard"
        found = shard_from_environment(os.environ)
    except ShardError as error:
        raise UsageError(str(error)) from None
    if found is None:
        return None, ""
    shard, reason = found
    local_rank = os.environ.get("LOCAL_RANK", "")
    if args.device == "cuda" and "RANK=" in reason and local_rank.isdigit():
        args.device = f"cuda:{local_rank}"  # one GPU per torchrun process
        reason += f"; device cuda:{local_rank} from LOCAL_RANK"
    return shard, f"{reason}; --shard K/N overrides"


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from aucgan.data.images import InputError, collect_inputs
    from aucgan.reconstruct import reconstruct_inputs

    if args.batch_size < 1 or args.every < 1:
        raise UsageError("--batch-size and --every must be at least 1")
    shard, reason = _take_shard(args)
    try:
        items = collect_inputs(args.input, args.every)
    except InputError as error:
        raise UsageError(str(error)) from None
    reconstructor = _reconstructor(args)
    if reconstructor.backend_note:
        log.info("%s", reconstructor.backend_note)
    if shard is not None:
        mine = sum(shard.owns(item.name) for item in items)
        log.info("shard %s (%s): %d of %d inputs", shard, reason, mine, len(items))
    bars: list[tqdm] = []
    try:
        report = reconstruct_inputs(
            reconstructor,
            items,
            args.out,
            crop=not args.no_crop,
            batch_size=args.batch_size,
            progress=lambda n: bars[0].update(n),
            on_total=lambda n: bars.append(tqdm(total=n, desc="reconstruct", unit="input")),
            shard=shard,
        )
    finally:
        for bar in bars:
            bar.close()
    log.info(
        "%d faces written, %d inputs already done (skipped), %d failed; outputs in %s",
        len(report.written), len(report.skipped), len(report.failed), args.out,
    )  # fmt: skip
    if report.failed:
        _failure_summary(report.failed, report.inputs)
        return 1
    return 0


def _cmd_edit(args: argparse.Namespace) -> int:
    from aucgan.reconstruct import FaceFolderError, Reconstructor, edit_face, parse_edits

    try:
        edits = parse_edits(_parse_assignments(args.au, "--au"))
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not edits:
        raise UsageError("nothing to edit: give --au AU12=1.0 (repeatable)")
    weights = args.weights
    if weights is None:
        import numpy as np

        codes = Path(args.face) / "codes.npz"
        if codes.is_file():
            with np.load(codes, allow_pickle=False) as data:
                recorded = str(data["record_weights"]) if "record_weights" in data.files else ""
            weights = recorded if recorded and Path(recorded).is_file() else None
    reconstructor = Reconstructor.load(weights, device=args.device, backend="auto")
    try:
        folder, _, _ = edit_face(args.face, reconstructor, edits, args.out)
    except FaceFolderError as error:
        raise UsageError(str(error)) from None
    log.info("wrote the edited face and before_after.png to %s", folder)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from aucgan.evaluate.report import error_summary
    from aucgan.evaluate.run import evaluate

    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    if args.photo_size is not None and not args.refine:
        raise UsageError("--photo-size is read by the refinement only: add --refine")
    try:
        reconstructor = _reconstructor(args, world_seed=True)
        result = evaluate(
            reconstructor,
            Path(args.out),
            n_faces=args.n,
            batch_size=args.batch_size,
            ground_truth_coarse=args.ground_truth_coarse,
            refine=reconstructor.refine_settings if args.refine else None,
            photo_size=args.photo_size,
        )
    except ValueError as error:  # e.g. MediaPipe finds no face in a test render (coarse.backend=mediapipe)
        raise UsageError(str(error).splitlines()[0]) from None
    m = result.metrics
    log.info("%s; AU-consistency F1 %.3f", error_summary(m), m["au_consistency"]["f1_mean"])
    log.info("report: %s (metrics.json beside it)", result.report)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    from aucgan.evaluate.report import error_summary
    from aucgan.evaluate.run import demo

    start = time.perf_counter()
    result = demo(Path(args.out), args.weights, n_faces=args.n)
    m = result.metrics
    out = Path(args.out)
    faces = out / "reconstructions"
    scores = error_summary(m, separator="\n" + " " * len("  metrics  "))
    print(
        f"\naucgan demo finished in {time.perf_counter() - start:.0f} s. Look at:\n"
        f"  report   {result.report}\n"
        f"  faces    {faces}/<name>/ (coarse.obj, detail.obj, normal_map.png, displacement.png, codes.npz, "
        "vis.png)\n"
        f"  AU edit  {faces}/<name>/edits/AU12=1/before_after.png\n"
        f"  metrics  {scores}"
    )
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from aucgan.assets import doctor
    from aucgan.config import Config, load_config

    cfg = load_config(Config, args.config, args.overrides)
    print(doctor(cfg, args.config or "the default config"))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from aucgan.bench import BenchError, bench, markdown, save
    from aucgan.config import Config, config_from_yaml, load_config

    if args.repeats < 1 or args.train_repeats < 1 or min(args.batches) < 1:
        raise UsageError("--repeats, --train-repeats and --batches must be at least 1")
    if args.device.startswith("cuda") and not torch_cuda_available():
        raise UsageError(f"--device {args.device}: no CUDA device here; use --device cpu")
    if args.config:
        cfg = load_config(Config, args.config, args.overrides)
    else:
        from aucgan.reconstruct import SHIPPED_WEIGHTS
        from aucgan.weights import stored_config_yaml

        stored = stored_config_yaml(SHIPPED_WEIGHTS)
        cfg = config_from_yaml(Config, stored, str(SHIPPED_WEIGHTS), args.overrides)
    try:
        results = bench(
            cfg, args.device, tuple(args.batches), args.repeats, args.train_repeats,
            progress=lambda message: log.info("bench: %s", message),
        )  # fmt: skip
    except BenchError as error:
        raise UsageError(str(error)) from None
    invocation = " ".join(["aucgan bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else "aucgan bench"
    save(results, Path(args.out), Path(args.results) if args.results else None, invocation)
    print(markdown(results))
    log.info("bench: results in %s%s", args.out, f" and {args.results}" if args.results else "")
    return 0


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _config_help(what: str) -> str:
    """Help of a config argument: ``what`` it is for, and that a preset's name works as well as a file."""
    from aucgan.config import preset_names

    return f"{what}: a YAML file or a preset's name ({', '.join(preset_names())})"


def _add_model_options(parser: argparse.ArgumentParser, overrides: bool = True) -> None:
    """``--weights`` and ``--device``; with ``overrides``, also ``--config`` and ``key=value`` overrides."""
    default = (
        "default: assets.weights of --config, else the weights shipped for the synthetic world"
        if overrides
        else "default: the weights file recorded in the face's codes.npz if it still exists, else the "
        "weights shipped for the synthetic world"
    )
    parser.add_argument(
        "--weights",
        help=f"aucgan weights (.safetensors from `aucgan pack`) or a `train detail` checkpoint; {default}",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default %(default)s)")
    if overrides:
        parser.add_argument("--config", help=_config_help("config whose assets name the weights"))
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


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
    render.add_argument("--config", help=_config_help("config (default: built-in defaults)"))
    render.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. render.image_size=512"
    )
    render.set_defaults(func=_cmd_render)

    synth = sub.add_parser(
        "synth",
        help="write the synthetic AU-wrinkle face dataset with full ground truth",
        description="Generate synthetic faces (80/10/10 train/val/test by disjoint identities) as shards "
        "plus a manifest that aucgan's datasets read back; --preview draws a contact sheet and an AU "
        "sweep sheet.",
    )
    synth.add_argument("--out", required=True, help="output folder (created)")
    synth.add_argument("--n", type=int, default=0, help="number of samples in all splits together")
    synth.add_argument("--seed", type=int, help="world seed (default: the config's seed)")
    synth.add_argument(
        "--preview", action="store_true", help="write preview/contact_sheet.png and au_sweep.png"
    )
    synth.add_argument("--config", help=_config_help("config (default: built-in defaults)"))
    synth.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. synth.workers=4"
    )
    synth.set_defaults(func=_cmd_synth)

    train = sub.add_parser(
        "train",
        help="train a stage: the AU net, the coarse stage or the AU-conditioned detail GAN",
        description="Train one stage from a YAML config or a preset installed with aucgan (synthetic-tiny, "
        "synthetic, flame-deca) with key=value overrides. Resume with "
        "resume=true; several processes (DDP) with trainer.devices=N.",
    )
    train.add_argument("stage", choices=("au", "coarse", "detail"), help="which stage")
    train.add_argument("config", help=_config_help("config"))
    train.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. trainer.steps=200 resume=true",
    )
    train.set_defaults(func=_cmd_train)

    pack = sub.add_parser(
        "pack",
        help="pack a detail checkpoint (with its coarse stage and AU net) into one safetensors weights file",
        description="Write the weights reconstruct/edit/evaluate/demo read: the coarse stage, the detail "
        "stage and its AU net from a checkpoint of `aucgan train detail`, with the config that builds them.",
    )
    pack.add_argument("config", help=_config_help("config (assets.detail names the checkpoint)"))
    pack.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    pack.add_argument("--checkpoint", help="the detail checkpoint (default: assets.detail)")
    pack.add_argument("--out", required=True, help="the .safetensors file to write")
    pack.add_argument("--provenance", default="", help="how the weights were made (kept in the file)")
    pack.add_argument("--float32", action="store_true", help="keep float32 parameters (default float16)")
    pack.set_defaults(func=_cmd_pack)

    reconstruct = sub.add_parser(
        "reconstruct",
        help="reconstruct detailed 3D faces from an image, folder, video or list file",
        description="Per face: coarse.obj/.mtl + texture.png, detail.obj (dense, with UVs), normal_map.png, "
        "displacement.png (16-bit) + .npy, codes.npz (all codes and AU scores), vis.png. Finished faces are "
        "skipped on a rerun; a bad input is reported and the others go on (exit status 1 if any failed). "
        "Several processes or machines share one job with --shard or a SLURM job array / torchrun.",
    )
    reconstruct.add_argument("input", help="an image, a folder of images, a video, or a .txt list of paths")
    reconstruct.add_argument("--out", required=True, help="output folder (one sub-folder per face)")
    reconstruct.add_argument("--no-crop", action="store_true", help="inputs are face crops already")
    reconstruct.add_argument(
        "--batch-size", type=int, default=8, help="faces per batch (default %(default)s)"
    )
    reconstruct.add_argument("--every", type=int, default=1, help="video: every N-th frame (default 1)")
    reconstruct.add_argument(
        "--shard",
        metavar="K/N",
        help="reconstruct only part K of N (K from 1 to N) of the inputs, chosen by a hash of each input's "
        "name; run N of these (on as many machines) into the same --out. Default: from a SLURM job array "
        "(SLURM_ARRAY_TASK_ID) or torchrun (RANK, WORLD_SIZE) when set, else all inputs; 1/1 takes all",
    )
    _add_model_options(reconstruct)
    reconstruct.set_defaults(func=_cmd_reconstruct)

    edit = sub.add_parser(
        "edit",
        help="change AU intensities of a reconstructed face: regenerated wrinkles, maps and meshes",
        description="Regenerate a reconstructed face with new AU intensities; writes every output file and "
        "before_after.png (input | before | after | displacement change) to FACE/edits/<edit> or --out.",
    )
    edit.add_argument("face", help="a face folder written by `aucgan reconstruct`")
    edit.add_argument(
        "--au", action="append", default=[], metavar="AU=I", help="AU intensity in [0, 1], repeatable"
    )
    edit.add_argument("--out", help="output folder (default FACE/edits/AU12=1)")
    _add_model_options(edit, overrides=False)
    edit.set_defaults(func=_cmd_edit)

    evaluate = sub.add_parser(
        "evaluate",
        help="measure detail error, AU consistency and AU-edit locality on held-out synthetic faces",
        description="Writes report.html, metrics.json, plots and example face folders.",
    )
    evaluate.add_argument("--out", required=True, help="report folder")
    evaluate.add_argument("--n", type=int, default=64, help="test faces (default %(default)s)")
    evaluate.add_argument("--batch-size", type=int, default=16, help="faces per batch (default %(default)s)")
    evaluate.add_argument(
        "--ground-truth-coarse",
        action="store_true",
        help="read each face through its true coarse fit: measures the detail stage alone",
    )
    evaluate.add_argument(
        "--refine",
        action="store_true",
        help="also measure the photometric refinement (refine.* settings), on top of the network and from "
        "flat: the `refined` rows (two refinements per face: slow)",
    )
    evaluate.add_argument(
        "--photo-size",
        type=int,
        metavar="P",
        help="with --refine: the refinement compares with the same faces rendered at P pixels, as it reads a "
        "photo's full-resolution crop (default: the network's input size; the network's rows do not change)",
    )
    _add_model_options(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    demo = sub.add_parser(
        "demo",
        help="the five-minute tour: reconstruct, edit and evaluate with the shipped synthetic-world models",
        description="Reconstructs held-out synthetic faces and a photo from files, edits AU12 on one, "
        "evaluates on the synthetic test split and writes an HTML report.",
    )
    demo.add_argument("--out", default="aucgan-demo", help="output folder (default %(default)s)")
    demo.add_argument("--n", type=int, default=32, help="test faces to evaluate (default %(default)s)")
    demo.add_argument("--weights", help="weights file (default: the shipped synthetic-world weights)")
    demo.set_defaults(func=_cmd_demo)

    doctor = sub.add_parser(
        "doctor",
        help="which assets are present and valid, what each unlocks, and where to get what is missing",
        description="Loads every file the config names under assets.* (safely: nothing in them runs) and "
        "reports it as valid, invalid (with the reason), missing or not set, with what it unlocks and where "
        "to obtain it; then the shipped weights and optional tools. Exit status 0 whatever is missing; 2 on "
        "a bad config.",
    )
    doctor.add_argument(
        "--config", help=_config_help("config whose assets.* to check (default: built-in defaults)")
    )
    doctor.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. assets.deca=PATH"
    )
    doctor.set_defaults(func=_cmd_doctor)

    bench = sub.add_parser(
        "bench",
        help="inference and training speed, FLOPs and memory, against the reference AUCGAN design",
        description="Times each inference stage and the whole reconstruction (batch 1 and 8), the detail "
        "GAN's training step, FLOPs per image and the share of a matmul peak measured in the same run, for "
        "the config's networks and the reference AUCGAN's (random weights; each design and batch in a "
        "fresh process). Writes JSON, and optionally the speed section of a Markdown results file.",
    )
    bench.add_argument(
        "--config", help=_config_help("config (default: the shipped synthetic-world weights' config)")
    )
    bench.add_argument(
        "--device", default="cpu", help="cpu or cuda (bfloat16 autocast) (default %(default)s)"
    )
    bench.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    bench.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    bench.add_argument("--train-repeats", type=int, default=3, help="timed training steps (median)")
    bench.add_argument("--out", default="bench.json", help="JSON output (default %(default)s)")
    bench.add_argument("--results", help="also write the speed section of this Markdown file")
    bench.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    bench.set_defaults(func=_cmd_bench)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line ``argv`` (default ``sys.argv[1:]``) parsed as :func:`main` runs it: trailing
    ``key=value`` items given after options join ``args.overrides``.

    Raises:
        SystemExit: (argparse's usage error, status 2) on an unknown command, option or argument.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # key=value overrides given after options (`reconstruct IMAGE --config C a=b`) are not contiguous
        # with the other positionals, which argparse leaves unrecognised; they join the overrides.
        if not isinstance(getattr(args, "overrides", None), list) or any(
            item.startswith("-") or "=" not in item for item in extra
        ):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    from aucgan.config import ConfigError
    from aucgan.data.shards import DatasetError
    from aucgan.loaders.common import CheckpointError
    from aucgan.train import TrainingStopped

    def say(message: object) -> None:
        """The command's one line on stderr: ``aucgan COMMAND: message``."""
        print(f"aucgan {args.command}: {message}", file=sys.stderr)

    try:
        return args.func(args)
    except (UsageError, ConfigError, DatasetError, CheckpointError) as error:
        say(error)
        return 2
    except OSError as error:
        say(f"{error.filename or ''}: {error.strerror or error}")
        return 2
    except TrainingStopped as error:
        from aucgan.train import first_process

        if first_process():  # every DDP process stops alike; one line says so
            say(error)
        return error.exit_status
    except Interrupted as error:
        say(error)
        return error.exit_status


if __name__ == "__main__":
    sys.exit(main())
