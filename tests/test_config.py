from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from aucgan.config import (
    PRESETS,
    Config,
    ConfigError,
    FaceModelConfig,
    RenderConfig,
    load_config,
    package_file,
    parse_overrides,
    preset_names,
    preset_path,
    resolve_config,
    save_config,
    setting,
)

DEFAULT_PRESET = preset_path("default")


@dataclass
class _Paths:
    root: Path = Path("assets")
    weights: str | None = None


@dataclass
class _Rich:
    """A schema with more field types than :class:`Config`, to exercise the loader in general."""

    name: str = "1"
    flag: str = "true"
    nothing: str = "null"
    sizes: tuple[int, ...] = setting((1, 2, 3), low=1)
    names: list[str] = field(default_factory=lambda: ["a", "b"])
    ratio: float = setting(0.5, low=0.0, high=1.0)
    paths: _Paths = field(default_factory=_Paths)


def _write(tmp_path: Path, text: str, name: str = "preset.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _leaf_keys(tree: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        if isinstance(value, dict):
            keys |= _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def _schema_leaf_keys(schema: type, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for item in dataclasses.fields(schema):
        if isinstance(item.default_factory, type) and dataclasses.is_dataclass(item.default_factory):
            keys |= _schema_leaf_keys(item.default_factory, f"{prefix}{item.name}.")
        else:
            keys.add(prefix + item.name)
    return keys


def _error(schema: type, path: Path | None = None, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(schema, path, overrides)
    message = str(caught.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_defaults_load_without_file() -> None:
    cfg = load_config(Config)
    assert type(cfg) is Config
    assert type(cfg.face_model) is FaceModelConfig and type(cfg.render) is RenderConfig
    assert cfg == Config()
    assert cfg.render.background == (0.12, 0.12, 0.14)


def test_each_load_returns_an_independent_instance() -> None:
    first, second = load_config(Config), load_config(Config)
    first.render.image_size = 64
    assert second.render.image_size == RenderConfig().image_size
    assert Config().render is not Config().render


def test_preset_file_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, "render:\n  image_size: 128\n  background: [0.25, 0.5, 1]\nseed: 7\n")
    cfg = load_config(Config, path)
    assert cfg.render.image_size == 128
    assert cfg.render.background == (0.25, 0.5, 1.0)
    assert cfg.seed == 7
    assert cfg.render.uv_size == RenderConfig().uv_size
    assert cfg.face_model == FaceModelConfig()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(Config, _write(tmp_path, "# nothing set\n")) == Config()


def test_overrides_apply_and_win_over_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "render:\n  image_size: 128\n  uv_size: 64\nface_model:\n  n_identity: 5\n")
    cfg = load_config(Config, path, ["render.image_size=256", "face_model.n_identity=12", "seed=3"])
    assert cfg.render.image_size == 256
    assert cfg.render.uv_size == 64
    assert cfg.face_model.n_identity == 12
    assert cfg.seed == 3


def test_overrides_without_file() -> None:
    cfg = load_config(Config, None, ["render.background=[1, 0.5, 0]"])
    assert cfg.render.background == (1.0, 0.5, 0.0)


def test_interpolation_is_resolved_and_checked() -> None:
    cfg = load_config(Config, None, ["render.uv_size=512", "render.image_size=${render.uv_size}"])
    assert cfg.render.image_size == 512
    message = _error(Config, overrides=("render.image_size=${seed}",))
    assert "render.image_size" in message and ">= 16" in message
    assert "nope" in _error(Config, overrides=("seed=${nope}",))


def test_parse_overrides_builds_nested_dict_of_yaml_values() -> None:
    items = ["a.b=3", "a.c=0.5", "name=abc", "flag=true", "size=[1, 2]", "empty=", "a.d.e=x y"]
    assert parse_overrides(items) == {
        "a": {"b": 3, "c": 0.5, "d": {"e": "x y"}},
        "name": "abc",
        "flag": True,
        "size": [1, 2],
        "empty": None,
    }


@pytest.mark.parametrize("item", ["render.image_size", "seed", ""])
def test_override_without_equals_is_named(item: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_overrides(["seed=1", item])
    assert repr(item) in str(caught.value)
    assert "key=value" in str(caught.value)


@pytest.mark.parametrize(
    "items", [["seed=1", "seed=2"], ["render=3", "render.image_size=4"], ["render.image_size=4", "render={}"]]
)
def test_overrides_setting_one_key_twice_are_rejected(items: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_overrides(items)
    assert items[0] in str(caught.value) and items[1] in str(caught.value)


@pytest.mark.parametrize("item", ["=3", "render..image_size=3", "render.=3"])
def test_override_with_empty_key_part_is_rejected(item: str) -> None:
    with pytest.raises(ConfigError, match="empty key"):
        parse_overrides([item])


def test_unparsable_override_value_is_rejected() -> None:
    assert "seed=[1," in _error(Config, overrides=("seed=[1,",))


def test_unknown_key_in_file_names_file_line_key_and_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed: 1\nrender:\n  uv_size: 64\n  imag_size: 128\n", name="my-preset.yaml")
    message = _error(Config, path)
    assert message.startswith(f"{path}:4:")
    assert "my-preset.yaml" in message
    assert "unknown key 'render.imag_size'" in message
    assert "did you mean 'render.image_size'" in message


def test_unknown_key_on_command_line_names_command_line_and_suggestion() -> None:
    message = _error(Config, overrides=("face_model.n_identiy=3",))
    assert message.startswith("command line:")
    assert "'face_model.n_identiy'" in message
    assert "did you mean 'face_model.n_identity'" in message


def test_unknown_section_is_reported_at_the_section() -> None:
    message = _error(Config, overrides=("rendr.image_size=3",))
    assert "unknown key 'rendr'" in message and "did you mean 'render'" in message


@pytest.mark.parametrize(
    ("key", "real"),
    [
        ("image_size", "render.image_size"),
        ("imagesize", "render.image_size"),
        ("nidentity", "face_model.n_identity"),
    ],
)
def test_key_in_wrong_section_suggests_its_real_place(tmp_path: Path, key: str, real: str) -> None:
    message = _error(Config, _write(tmp_path, f"{key}: 128\n"))
    assert f"unknown key '{key}'" in message and f"did you mean '{real}'" in message


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    message = _error(Config, overrides=("render.zzzzzz=1",))
    assert "render.image_size" in message and "render.uv_size" in message and "render.background" in message


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        ("seed: 1\nrender:\n  uv_size: 64\nseed: 2\n", 4, "seed", 1),
        ("seed: 1\nrender:\n  image_size: 64\n  uv_size: 64\n  image_size: 32\n", 5, "render.image_size", 3),
        ("render: {uv_size: 64, uv_size: 32}\n", 1, "render.uv_size", 1),
        (
            "render:\n  uv_size: 64\nface_model:\n  kind: procedural\nrender:\n  image_size: 64\n",
            5,
            "render",
            1,
        ),
    ],
)
def test_duplicate_key_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, first: int
) -> None:
    path = _write(tmp_path, text)
    message = _error(Config, path)
    assert message.startswith(f"{path}:{line}:")
    assert f"duplicate key '{key}'" in message
    assert f"line {first}" in message


def test_duplicate_key_in_a_list_of_mappings_is_found(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed:\n  - a: 1\n    a: 2\n")
    message = _error(Config, path)
    assert message.startswith(f"{path}:3:") and "duplicate key 'seed[0].a'" in message


def test_yaml_merge_key_is_not_a_duplicate(tmp_path: Path) -> None:
    path = _write(tmp_path, "render:\n  <<: {image_size: 64, uv_size: 64}\n  uv_size: 128\n")
    cfg = load_config(Config, path)
    assert (cfg.render.image_size, cfg.render.uv_size) == (64, 128)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("render.image_size", "abc", "int"),
        ("render.image_size", "3.5", "int"),
        ("seed", "true", "int"),
        ("face_model.kind", "3", "str"),
        ("render.background", "[0, 0]", "tuple[float, float, float]"),
        ("render.background", "[0, zero, 0]", "tuple[float, float, float]"),
    ],
)
def test_wrong_type_names_key_value_and_expected_type(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    on_command_line = _error(Config, overrides=(f"{key}={value}",))
    section, _, leaf = key.rpartition(".")
    text = f"{section}:\n  {leaf}: {value}\n" if section else f"{leaf}: {value}\n"
    in_file = _error(Config, _write(tmp_path, text))
    for message in (on_command_line, in_file):
        assert f"wrong type for '{key}'" in message
        assert f"expected {expected}" in message
        shown = repr(yaml.safe_load(value))
        assert shown in message
    assert on_command_line.startswith("command line:")
    assert in_file.startswith(str(tmp_path / "preset.yaml"))


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("render.image_size=0", "render.image_size", ">= 16"),
        ("render.uv_size=15", "render.uv_size", ">= 16"),
        ("face_model.kind=foo", "face_model.kind", "one of 'procedural'"),
        ("face_model.n_identity=0", "face_model.n_identity", "between 1 and 16"),
        ("face_model.n_identity=17", "face_model.n_identity", "between 1 and 16"),
        ("render.background=[0, 1.5, 0]", "render.background", "between 0.0 and 1.0"),
        ("render.background=[0, .nan, 0]", "render.background", "between 0.0 and 1.0"),
    ],
)
def test_bad_value_is_rejected(override: str, key: str, expected: str) -> None:
    message = _error(Config, overrides=(override,))
    assert f"invalid value for '{key}'" in message and expected in message


def test_bounds_are_inclusive() -> None:
    cfg = load_config(
        Config, None, ["render.image_size=16", "face_model.n_identity=16", "render.background=[0,1,1]"]
    )
    assert (cfg.render.image_size, cfg.face_model.n_identity, cfg.render.background) == (
        16,
        16,
        (0.0, 1.0, 1.0),
    )


def test_section_given_a_value_is_rejected(tmp_path: Path) -> None:
    message = _error(Config, _write(tmp_path, "seed: 1\nrender:\n"))
    assert "'render' is a section" in message and ":2:" in message


@pytest.mark.parametrize(
    ("text", "line"), [("seed: 1\nrender:\n  image_size: [1\n", 4), ("render:\n\timage_size: 1\n", 2)]
)
def test_invalid_yaml_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = _write(tmp_path, text)
    message = _error(Config, path)
    assert message.startswith(f"{path}:{line}: invalid YAML")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in _error(Config, _write(tmp_path, "- seed\n- 1\n"))


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    message = _error(Config, path)
    assert "not found" in message and str(path) in message


def test_round_trip_save_then_load_is_equal(tmp_path: Path) -> None:
    cfg = load_config(Config, None, ["render.image_size=96", "render.background=[0.1, 0.2, 0.3]", "seed=-4"])
    path = save_config(cfg, tmp_path / "runs" / "first")
    assert path == tmp_path / "runs" / "first" / "config.yaml"
    assert load_config(Config, path) == cfg
    assert _leaf_keys(yaml.safe_load(path.read_text(encoding="utf-8"))) == _schema_leaf_keys(Config)


def test_round_trip_keeps_strings_that_look_like_other_types(tmp_path: Path) -> None:
    cfg = load_config(
        _Rich, None, ["paths.root=/data/flame", "paths.weights='0x10'", "sizes=[4]", "names=['yes', '2']"]
    )
    assert cfg.paths.root == Path("/data/flame")
    assert cfg.paths.weights == "0x10"
    assert cfg.sizes == (4,) and cfg.names == ["yes", "2"]
    assert load_config(_Rich, save_config(cfg, tmp_path)) == cfg
    assert load_config(_Rich, save_config(_Rich(), tmp_path)) == _Rich()


def test_list_elements_are_checked_against_bounds() -> None:
    assert "each element >= 1" in _error(_Rich, overrides=("sizes=[2, 0]",))


def test_save_refuses_an_invalid_config(tmp_path: Path) -> None:
    cfg = Config(render=RenderConfig(image_size=0))
    with pytest.raises(ConfigError, match=r"render\.image_size"):
        save_config(cfg, tmp_path)
    assert not (tmp_path / "config.yaml").exists()


def test_config_error_is_a_single_line_value_error() -> None:
    error = ConfigError("first line\n  second line\n")
    assert isinstance(error, ValueError)
    assert str(error) == "first line second line"


def test_repository_default_preset_loads_and_sets_every_key() -> None:
    assert load_config(Config, DEFAULT_PRESET) == Config()
    assert _leaf_keys(yaml.safe_load(DEFAULT_PRESET.read_text(encoding="utf-8"))) == _schema_leaf_keys(Config)


def test_non_dataclass_schema_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        load_config(dict)


# Presets by name, and package:// asset paths -------------------------------------------------------------


def test_presets_are_installed_with_the_package_and_load_by_name(tmp_path: Path, monkeypatch) -> None:
    import aucgan

    assert Path(aucgan.__file__).parent / "configs" == PRESETS
    assert {"default", "flame-deca", "synthetic", "synthetic-tiny"} <= set(preset_names())
    monkeypatch.chdir(tmp_path)  # no preset file lies here
    for name in preset_names():
        assert resolve_config(name) == resolve_config(f"{name}.yaml") == PRESETS / f"{name}.yaml"
        assert load_config(Config, name) == load_config(Config, PRESETS / f"{name}.yaml")
    assert load_config(Config, "synthetic-tiny").render.image_size == 64


def test_a_file_wins_over_a_preset_of_the_same_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("synthetic.yaml").write_text("seed: 7\n", encoding="utf-8")
    assert resolve_config("synthetic.yaml") == Path("synthetic.yaml")
    assert load_config(Config, "synthetic.yaml").seed == 7
    assert load_config(Config, "synthetic").render.image_size == 160  # the bare name is the preset
    Path("synthetic-tiny").mkdir()  # a folder is no config: the name still means the preset
    assert resolve_config("synthetic-tiny") == PRESETS / "synthetic-tiny.yaml"


def test_old_configs_paths_resolve_to_the_preset_with_a_warning(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="aucgan.config"):
        assert resolve_config("configs/synthetic.yaml") == PRESETS / "synthetic.yaml"
    assert caplog.messages == [
        f"configs/synthetic.yaml: not here; using the preset 'synthetic' installed with aucgan "
        f"({PRESETS / 'synthetic.yaml'})"
    ]
    mine = tmp_path / "configs" / "synthetic.yaml"
    mine.parent.mkdir()
    mine.write_text("seed: 3\n", encoding="utf-8")
    assert load_config(Config, "configs/synthetic.yaml").seed == 3  # a real file is read as it is


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("synthetc", "no config file or preset named 'synthetc'; presets: "),
        (
            "runs/x/config.yaml",
            "config file not found: runs/x/config.yaml; give an existing YAML file or a preset: ",
        ),
        (
            "configs/nope.yaml",
            "config file not found: configs/nope.yaml; give an existing YAML file or a preset: ",
        ),
    ],
)
def test_an_unknown_config_lists_the_presets(tmp_path: Path, monkeypatch, given: str, expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    message = _error(Config, given)
    assert message.startswith(expected) and message.endswith(", ".join(preset_names()))
    with pytest.raises(ConfigError, match="no preset named 'nope'; presets: default, "):
        preset_path("nope")


def test_package_paths_name_files_inside_the_installed_package() -> None:
    import aucgan

    cfg = load_config(Config, "synthetic", ["assets.au_net=package://pretrained/synthetic.safetensors"])
    shipped = Path(aucgan.__file__).parent / "pretrained" / "synthetic.safetensors"
    assert cfg.assets.au_net == str(shipped) and shipped.is_file()
    assert package_file("runs/x.ckpt") == "runs/x.ckpt"
    for bad in ("package://", "package://../setup.py", "package:///etc/passwd"):
        message = _error(Config, overrides=(f"assets.deca={bad}",))
        assert message.startswith(f"assets.deca={bad}: package:// names a file inside the installed aucgan")


def test_coarse_backend_auto_and_the_face_size_limit_load() -> None:
    cfg = load_config(Config, DEFAULT_PRESET, ["coarse.backend=auto"])
    assert cfg.coarse.backend == "auto"
    assert cfg.coarse.max_faces == 64 and cfg.coarse.min_face_px == pytest.approx(40.0)
    with pytest.raises(ConfigError, match=r"coarse\.min_face_px"):
        load_config(Config, None, ["coarse.min_face_px=0"])
    with pytest.raises(ConfigError, match=r"coarse\.backend"):
        load_config(Config, None, ["coarse.backend=dlib"])
