"""The user-supplied files (assets) a config names: what each is, what it unlocks, where to get it, and
whether the file at hand is usable — the report of ``aucgan doctor``.

Every asset is a path under ``assets.*`` in the config (:class:`~aucgan.config.AssetsConfig`); aucgan never
downloads any of them. :func:`check_assets` actually loads each file given, with the same safe, strict
loaders the stages use (restricted unpicklers, ``weights_only`` checkpoints, ``allow_pickle=False``
arrays), so "valid" means the stages will accept it and "invalid" comes with the loader's one-line
reason. Nothing in a file is ever executed. :func:`check_shipped_weights` and :func:`check_tools` report
what the installation itself brings; :func:`format_report` lays it all out as a table.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aucgan.config import Config, ConfigError

FLAME_VERTICES, FLAME_FACES = 5023, 9976
"""Sizes of FLAME 2020's mesh, which DECA's UV template and landmark embedding are made for."""

VALID, INVALID, MISSING, NOT_SET = "valid", "invalid", "missing", "not set"
AVAILABLE, UNAVAILABLE = "available", "unavailable"

DECA_REPOSITORY = "https://github.com/yfeng95/DECA"


@dataclass(frozen=True)
class AssetSpec:
    """What one ``assets.*`` key points to.

    Attributes:
        key: the field of :class:`~aucgan.config.AssetsConfig`.
        file: the file's usual name.
        what: what the file is.
        unlocks: what a valid file makes possible.
        obtain: where a user gets it.
    """

    key: str
    file: str
    what: str
    unlocks: str
    obtain: str

    @property
    def config_key(self) -> str:
        return f"assets.{self.key}"

    def hint(self) -> str:
        """One line for error messages: what the file is and where it comes from."""
        return f"{self.what} ({self.file}): {self.obtain}; check with `aucgan doctor --config CONFIG`"


ASSET_SPECS: tuple[AssetSpec, ...] = (
    AssetSpec(
        "flame_model",
        "generic_model.pkl",
        "FLAME 2020 head model",
        "FLAME face model: reconstruct/train with face_model.kind=flame",
        "register at https://flame.is.tue.mpg.de, accept the licence and download FLAME 2020 "
        "(the zip holds generic_model.pkl)",
    ),
    AssetSpec(
        "flame_landmarks",
        "landmark_embedding.npy",
        "DECA's landmark embedding for FLAME",
        "FLAME's 68 landmarks (face_model.kind=flame)",
        f"DECA's repository {DECA_REPOSITORY}, file data/landmark_embedding.npy",
    ),
    AssetSpec(
        "head_template",
        "head_template.obj",
        "DECA's FLAME UV template",
        "FLAME's UV layout: texture, displacement and normal maps, textured OBJs (face_model.kind=flame)",
        f"DECA's repository {DECA_REPOSITORY}, file data/head_template.obj",
    ),
    AssetSpec(
        "uv_face_mask",
        "uv_face_eye_mask.png",
        "DECA's UV face mask",
        "the face region of FLAME's UV layout, where detail lives (face_model.kind=flame)",
        f"DECA's repository {DECA_REPOSITORY}, file data/uv_face_eye_mask.png",
    ),
    AssetSpec(
        "flame_albedo",
        "FLAME_albedo_from_BFM.npz or FLAME_texture.npz",
        "FLAME albedo model",
        "albedo (texture) of FLAME faces (face_model.kind=flame)",
        "FLAME_albedo_from_BFM.npz: run https://github.com/TimoBolkart/BFM_to_FLAME on the Basel Face "
        "Model 2017 (register at https://faces.dmi.unibas.ch/bfm/bfm2017.html); or FLAME_texture.npz, the "
        "FLAME texture space, from https://flame.is.tue.mpg.de after registration",
    ),
    AssetSpec(
        "deca",
        "deca_model.tar",
        "DECA's trained networks",
        "DECA's coarse encoder E_flame, and its detail networks E_detail + D_detail "
        "(model.detail_decoder=none): aucgan reconstruct --config flame-deca",
        f"the Google-Drive link in DECA's README ({DECA_REPOSITORY}), after accepting its licence",
    ),
    AssetSpec(
        "au_net",
        "OpenGprahAU-ResNet50_second_stage.pth, or a checkpoint of `aucgan train au`",
        "AU recogniser (OpenGraphAU MEFARG)",
        "AU scores and the per-AU features that condition the detail stage",
        "the ResNet-50 second-stage model linked from OpenGraphAU's README "
        "(https://github.com/lingjivoo/OpenGraphAU); or train one: aucgan train au CONFIG",
    ),
    AssetSpec(
        "vgg19",
        "vgg19-dcbfe4e9.pth",
        "torchvision's ImageNet VGG19 weights",
        "the ID-MRF loss of `aucgan train detail` (loss.mrf)",
        "torchvision's file https://download.pytorch.org/models/vgg19-dcbfe4e9.pth, fetched once by hand "
        "(aucgan never downloads)",
    ),
    AssetSpec(
        "coarse",
        "last.ckpt of `aucgan train coarse`",
        "a trained coarse stage",
        "`aucgan train detail` on top of your own coarse stage",
        "train one: aucgan train coarse CONFIG",
    ),
    AssetSpec(
        "detail",
        "last.ckpt of `aucgan train detail`",
        "a trained detail stage (with its coarse stage and AU net)",
        "`aucgan pack`; reconstruct with your own detail stage "
        "(FLAME: a model.detail_decoder other than none)",
        "train one: aucgan train detail CONFIG",
    ),
    AssetSpec(
        "weights",
        "a .safetensors file of `aucgan pack`",
        "aucgan weights",
        "reconstruct / edit / evaluate with your packed models (empty: the shipped synthetic-world weights)",
        "pack a detail checkpoint: aucgan pack CONFIG --out FILE.safetensors",
    ),
)
"""Every ``assets.*`` key, in the order of the report."""

_SPECS = {spec.key: spec for spec in ASSET_SPECS}


def asset_spec(key: str) -> AssetSpec:
    """The :class:`AssetSpec` of ``assets.<key>``."""
    if key not in _SPECS:
        raise KeyError(f"unknown asset key {key!r}; valid: {', '.join(_SPECS)}")
    return _SPECS[key]


def asset_hint(key: str) -> str:
    """What ``assets.<key>`` is and where it comes from, for one-line error messages."""
    return asset_spec(key).hint()


@dataclass(frozen=True)
class Check:
    """The state of one asset or tool.

    Attributes:
        name: ``assets.<key>``, or the name of a shipped file or tool.
        status: ``valid`` / ``invalid`` / ``missing`` / ``not set`` for files, ``available`` /
            ``unavailable`` for tools.
        path: the path as given (``""`` when not set), or where a tool was found.
        detail: a summary of a valid file, or the one-line reason it is invalid or unavailable.
        unlocks: what it makes possible.
        obtain: where to get it (shown unless it is valid or available).
    """

    name: str
    status: str
    path: str
    detail: str
    unlocks: str
    obtain: str

    @property
    def ok(self) -> bool:
        return self.status in (VALID, AVAILABLE)


Validator = Callable[[str, Config, dict[str, Any]], str]


def _flame_model(path: str, cfg: Config, found: dict[str, Any]) -> str:
    from aucgan.face_model.flame import read_flame

    data = read_flame(path, cfg.face_model.n_shape, cfg.face_model.n_expression)
    found["flame"] = data
    return (
        f"{data.template.shape[0]} vertices, {data.faces.shape[0]} triangles; "
        f"{cfg.face_model.n_shape} shape + {cfg.face_model.n_expression} expression components used"
    )


def _flame_landmarks(path: str, cfg: Config, found: dict[str, Any]) -> str:
    from aucgan.face_model.flame import N_CONTOUR, N_STATIC, read_landmark_embedding

    flame = found.get("flame")
    embedding = read_landmark_embedding(path, FLAME_FACES if flame is None else flame.faces.shape[0])
    rows = embedding.dynamic_faces.shape[0]
    full = embedding.full_faces.shape[0]
    return f"{N_STATIC} static + {N_CONTOUR} contour ({rows} yaws) + {full} full landmarks"


def _head_template(path: str, cfg: Config, found: dict[str, Any]) -> str:
    import numpy as np

    from aucgan.face_model.flame import read_obj_template, template_mismatch
    from aucgan.loaders.common import CheckpointError

    template = read_obj_template(path)
    flame = found.get("flame")
    sizes = (
        f"{template.vertices.shape[0]} vertices, {template.uvs.shape[0]} uvs, "
        f"{template.faces.shape[0]} triangles"
    )
    if flame is not None:
        problem = template_mismatch(template, flame.faces, flame.template.shape[0])
        if problem is not None:
            raise CheckpointError(f"{problem}; it must be DECA's head_template.obj for FLAME 2020")
        return f"{sizes}; its triangles are the FLAME model's"
    if template.vertices.shape[0] != FLAME_VERTICES or template.faces.shape[0] != FLAME_FACES:
        raise CheckpointError(
            f"has {sizes}; FLAME 2020 has {FLAME_VERTICES} vertices and {FLAME_FACES} triangles"
        )
    if not np.all((template.uvs >= 0) & (template.uvs <= 1)):
        raise CheckpointError("texture coordinates outside the unit square")
    return f"{sizes} (not compared with a FLAME model: assets.flame_model is not valid)"


def _uv_face_mask(path: str, cfg: Config, found: dict[str, Any]) -> str:
    from aucgan.face_model.flame import read_uv_mask

    mask = read_uv_mask(path)
    return f"{mask.shape[1]} x {mask.shape[0]} pixels, {100 * mask.mean():.0f} % face"


def _flame_albedo(path: str, cfg: Config, found: dict[str, Any]) -> str:
    from aucgan.face_model.flame_texture import read_flame_albedo

    mean, basis = read_flame_albedo(path, cfg.model.n_albedo)
    return (
        f"{mean.shape[-1]} x {mean.shape[-2]} texture; {basis.shape[0]} components used (model.n_albedo), "
        f"resampled to {cfg.render.uv_size}²"
    )


def _deca(path: str, cfg: Config, found: dict[str, Any]) -> str:
    from aucgan.loaders.deca import load_deca

    weights = load_deca(
        path, n_shape=cfg.face_model.n_shape, n_tex=cfg.model.n_albedo, n_exp=cfg.face_model.n_expression
    )
    total = weights.coarse_encoder.layout.total
    return f"{', '.join(weights.reports)}: every key matches (E_flame regresses {total} values)"


def _au_net(path: str, cfg: Config, found: dict[str, Any]) -> str:
    from aucgan.loaders.opengraphau import load_au_net

    net = load_au_net(path)
    return f"MEFARG {net.backbone_name}, stage {net.stage}: every key matches"


def _vgg19(path: str, cfg: Config, found: dict[str, Any]) -> str:
    from aucgan.nets.vgg import load_vgg19

    load_vgg19(path)
    return "VGG19 convolution trunk: every key matches"


def _stored_config(data: Any, source: str) -> Config:
    import yaml

    from aucgan.config import config_from_yaml
    from aucgan.loaders.common import CheckpointError

    stored = data.get("aucgan", {}).get("config") if isinstance(data.get("aucgan"), dict) else None
    if not isinstance(stored, dict):
        raise CheckpointError("holds no stored config; is it a checkpoint of `aucgan train`?")
    try:
        return config_from_yaml(Config, yaml.safe_dump(stored, sort_keys=False), f"{source} [config]")
    except ConfigError as error:
        raise CheckpointError(f"its stored config does not load: {error}") from None


def _describe(trained: Config) -> str:
    return f"face_model.kind={trained.face_model.kind}, model.detail_decoder={trained.model.detail_decoder}"


def _coarse(path: str, cfg: Config, found: dict[str, Any]) -> str:
    from aucgan.build import COARSE_PREFIX
    from aucgan.loaders.common import CheckpointError, read_checkpoint, strip_prefix

    data = read_checkpoint(path)
    state = data.get("state_dict")
    if "aucgan" not in data or not isinstance(state, dict) or not strip_prefix(state, COARSE_PREFIX):
        raise CheckpointError("not a checkpoint of `aucgan train coarse`")
    trained = _stored_config(data, path)
    return f"coarse stage, {len(strip_prefix(state, COARSE_PREFIX))} tensors ({_describe(trained)})"


def _detail(path: str, cfg: Config, found: dict[str, Any]) -> str:
    from aucgan.loaders.common import read_checkpoint
    from aucgan.weights import detail_checkpoint_states

    data = read_checkpoint(path)
    states = detail_checkpoint_states(data, path)
    trained = _stored_config(data, path)
    count = sum(len(state) for state in states.values())
    return f"coarse + detail stages, {count} tensors ({_describe(trained)})"


def _weights(path: str, cfg: Config, found: dict[str, Any]) -> str:
    from aucgan.weights import read_weights

    packed = read_weights(path)
    provenance = f"; {packed.provenance}" if packed.provenance else ""
    return f"coarse + detail stages ({_describe(packed.config)}), aucgan {packed.version}{provenance}"


_VALIDATORS: dict[str, Validator] = {
    "flame_model": _flame_model,
    "flame_landmarks": _flame_landmarks,
    "head_template": _head_template,
    "uv_face_mask": _uv_face_mask,
    "flame_albedo": _flame_albedo,
    "deca": _deca,
    "au_net": _au_net,
    "vgg19": _vgg19,
    "coarse": _coarse,
    "detail": _detail,
    "weights": _weights,
}


def _reason(error: BaseException, path: str) -> str:
    """The one-line message of a loader's error, without the leading ``<path>: `` it repeats."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__
    for prefix in (f"{path}: ", f"{Path(path)}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _check_file(name: str, path: str, validate: Callable[[str], str], unlocks: str, obtain: str) -> Check:
    from aucgan.loaders.common import CheckpointError

    if not path:
        return Check(name, NOT_SET, "", "", unlocks, obtain)
    if not Path(path).is_file():
        detail = "a folder, not a file" if Path(path).is_dir() else "no such file"
        return Check(name, MISSING, path, detail, unlocks, obtain)
    try:
        summary = validate(path)
    except (CheckpointError, ConfigError, ValueError, OSError, RuntimeError) as error:
        return Check(name, INVALID, path, _reason(error, path), unlocks, obtain)
    return Check(name, VALID, path, summary, unlocks, obtain)


def check_assets(cfg: Config) -> list[Check]:
    """Load every file ``cfg.assets`` names and report on it, in the order of :data:`ASSET_SPECS`.

    Checks that depend on each other use what was found before: the landmark embedding and the UV
    template are checked against the FLAME model when that is valid.
    """
    found: dict[str, Any] = {}
    checks = []
    for spec in ASSET_SPECS:
        validator = _VALIDATORS[spec.key]

        def validate(path: str, validator: Validator = validator) -> str:
            return validator(path, cfg, found)

        check = _check_file(
            spec.config_key, getattr(cfg.assets, spec.key), validate, spec.unlocks, spec.obtain
        )
        if check.status == NOT_SET:
            check = dataclasses.replace(check, detail=f"expects {spec.file}")
        checks.append(check)
    return checks


def check_shipped_weights() -> Check:
    """The synthetic-world weights that come with aucgan (``aucgan/pretrained/synthetic.safetensors``): what
    they were trained on and their measured scores, a few lines
    (:func:`aucgan.evaluate.shipped.describe_shipped`)."""
    from aucgan.evaluate.shipped import describe_shipped
    from aucgan.reconstruct import SHIPPED_WEIGHTS

    path = str(SHIPPED_WEIGHTS)
    check = _check_file(
        "synthetic weights",
        path,
        lambda p: "\n".join(describe_shipped(p)),
        "aucgan demo, and reconstruct / edit / evaluate without --weights (the synthetic world)",
        "part of an aucgan release (pip install aucgan); in a source checkout, make them as "
        "src/aucgan/pretrained/README.md describes",
    )
    return check


def _opencv() -> Check:
    unlocks = "automatic face detection and cropping in reconstruct (else --no-crop or landmark files)"
    obtain = "pip install opencv-python-headless"
    try:
        import numpy as np

        from aucgan.data.images import detect_faces

        detect_faces(np.zeros((64, 64, 3), dtype=np.uint8))
        import cv2
    except (ImportError, RuntimeError) as error:
        return Check("OpenCV face detector", UNAVAILABLE, "", _reason(error, ""), unlocks, obtain)
    return Check("OpenCV face detector", AVAILABLE, "", f"OpenCV {cv2.__version__}", unlocks, obtain)


def _chromium() -> Check:
    from aucgan.evaluate.screenshot import CHROMIUM_ENV, find_chromium

    unlocks = (
        "PNG screenshots of an HTML report: python -m aucgan.evaluate.screenshot REPORT.html OUT.png "
        "(report.html itself needs no browser), and the tests that screenshot a report"
    )
    obtain = f"install Chromium or Google Chrome on PATH, or set {CHROMIUM_ENV} to its executable"
    found = find_chromium()
    if found is None:
        return Check("Chromium", UNAVAILABLE, "", "not found", unlocks, obtain)
    return Check("Chromium", AVAILABLE, found, "", unlocks, obtain)


def _video() -> Check:
    unlocks = "video inputs to reconstruct (every frame, or every N-th with --every N)"
    obtain = "pip install opencv-python-headless (a dependency of aucgan; its wheel bundles FFmpeg)"
    name = "OpenCV video reader"
    try:
        import cv2
    except ImportError as error:
        return Check(name, UNAVAILABLE, "", _reason(error, ""), unlocks, obtain)
    if not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        return Check(name, UNAVAILABLE, "", f"OpenCV {cv2.__version__} without FFmpeg", unlocks, obtain)
    return Check(name, AVAILABLE, "", f"OpenCV {cv2.__version__} with FFmpeg", unlocks, obtain)


def _mediapipe() -> Check:
    from aucgan.data.face_mesh import INSTALL_HINT, MediaPipeMissing, require_mediapipe

    unlocks = (
        "coarse.backend=mediapipe: real photos without a coarse network or FLAME, training on your photos"
    )
    try:
        module = require_mediapipe()
    except MediaPipeMissing:
        return Check("MediaPipe face mesh", UNAVAILABLE, "", "not installed", unlocks, INSTALL_HINT)
    return Check(
        "MediaPipe face mesh", AVAILABLE, "", f"mediapipe {module.__version__}", unlocks, INSTALL_HINT
    )


def check_tools() -> list[Check]:
    """Optional tools: OpenCV's face detector, MediaPipe's face mesh, Chromium for report screenshots,
    OpenCV's video reader."""
    return [_opencv(), _mediapipe(), _chromium(), _video()]


READY_FLAME = ("flame_model", "flame_landmarks", "head_template", "uv_face_mask", "flame_albedo")


def readiness(cfg: Config, assets: Sequence[Check], shipped: Check) -> list[tuple[str, list[str]]]:
    """What can run with these assets: ``(task, missing)`` pairs, ``missing`` the config keys (or files)
    that are not valid yet (empty = ready)."""
    status = {check.name: check.ok for check in assets}

    def missing(keys: Sequence[str]) -> list[str]:
        return [f"assets.{key}" for key in keys if not status.get(f"assets.{key}", False)]

    detail_sources = ("deca", "au_net") if cfg.model.detail_decoder == "none" else ("detail",)
    synthetic = (
        [] if shipped.ok or status.get("assets.weights", False) else [shipped.name + " or assets.weights"]
    )
    return [
        ("aucgan demo / reconstruct on the synthetic world", synthetic),
        (
            f"aucgan reconstruct with face_model.kind=flame "
            f"(model.detail_decoder={cfg.model.detail_decoder})",
            missing([*READY_FLAME, *detail_sources]),
        ),
        ("ID-MRF loss in aucgan train detail", missing(["vgg19"])),
    ]


_NAME_WIDTH, _STATUS_WIDTH, _WIDTH = 25, 12, 110


def _rows(check: Check) -> list[str]:
    indent = " " * (_NAME_WIDTH + _STATUS_WIDTH)
    lines = [f"{check.name:<{_NAME_WIDTH}}{check.status:<{_STATUS_WIDTH}}{check.path or '-'}".rstrip()]

    def add(text: str) -> None:
        lines.extend(
            textwrap.wrap(
                text,
                _WIDTH,
                initial_indent=indent,
                subsequent_indent=indent + "  ",
                break_on_hyphens=False,
                break_long_words=False,
            )
        )

    for line in check.detail.splitlines():
        add(line)
    add(f"unlocks: {check.unlocks}")
    if not check.ok:
        add(f"get it: {check.obtain}")
    return lines


def format_report(
    cfg: Config, config_name: str, assets: Sequence[Check], shipped: Check, tools: Sequence[Check]
) -> str:
    """The doctor's report: a table of the assets, the shipped weights and the optional tools, then what
    is ready to run."""
    header = f"{'':<{_NAME_WIDTH}}{'STATUS':<{_STATUS_WIDTH}}PATH"
    lines = [
        f"aucgan doctor: assets of {config_name} (face_model.kind={cfg.face_model.kind}); relative paths are "
        f"read from {Path.cwd()}",
        "",
        "ASSETS (config key)" + header[len("ASSETS (config key)") :],
    ]
    for check in assets:
        lines += _rows(check)
    lines += ["", "SHIPPED WITH AUCGAN"]
    lines += _rows(shipped)
    lines += ["", "OPTIONAL TOOLS"]
    for check in tools:
        lines += _rows(check)
    valid = sum(check.ok for check in assets)
    given = sum(check.status != NOT_SET for check in assets)
    lines += ["", f"{valid} of {len(assets)} assets valid ({given} set in the config)."]
    for task, missing in readiness(cfg, assets, shipped):
        state = "ready" if not missing else "needs " + ", ".join(missing)
        lines += textwrap.wrap(f"{task}: {state}", _WIDTH, subsequent_indent="    ", break_on_hyphens=False)
    return "\n".join(lines)


def doctor(cfg: Config, config_name: str) -> str:
    """Check everything and return the report (see :func:`format_report`)."""
    return format_report(cfg, config_name, check_assets(cfg), check_shipped_weights(), check_tools())


__all__ = [
    "ASSET_SPECS",
    "AssetSpec",
    "Check",
    "asset_hint",
    "asset_spec",
    "check_assets",
    "check_shipped_weights",
    "check_tools",
    "doctor",
    "format_report",
    "readiness",
]
