"""World specs: which real gymnasium env a world model imitates, and how it is seen.

A *world* is a real gymnasium environment plus everything the rest of the project
needs to agree on: the frame size and rate, how many frames make one latent frame and
one chunk, the action space and keyboard map, and a set of *variants*. A variant
changes the physics (attribute overrides on the unwrapped env) and/or the appearance
(recolouring of named parts of the native render) and comes with a natural-language
prompt that describes it. Collection, the real twin, the dream env and the viewer all
read the same :class:`WorldSpec`.

    >>> spec = get_world("cartpole")
    >>> spec.frames_per_chunk, spec.frame_height, spec.frame_width
    (4, 64, 96)
    >>> spec.variant("long_red_low_gravity").prompt
    'a long red pole on a black cart under low gravity'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np


__all__ = [
    "Variant",
    "WorldSpec",
    "get_world",
    "list_worlds",
    "register_world",
]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Variant:
    """One version of a world: physics overrides, colour overrides and its prompt.

    Attributes:
        name: short identifier, unique within a world.
        prompt: natural-language description of what the frames show.
        physics: attribute overrides set on the *unwrapped* gymnasium env after
            construction (e.g. ``{"length": 0.75, "gravity": 5.0}``). Derived
            quantities are recomputed by the world's ``physics_hook``.
        colors: appearance overrides, part name -> RGB, where the part names are the
            keys of the world's ``palette`` (e.g. ``{"pole": (220, 40, 40)}``).
    """

    name: str
    prompt: str
    physics: dict[str, float] = field(default_factory=dict)
    colors: dict[str, RGB] = field(default_factory=dict)


@dataclass(frozen=True)
class WorldSpec:
    """Everything that defines a world; see the module docstring.

    Attributes:
        name: world name used by :func:`get_world`.
        env_id: gymnasium id of the real environment.
        frame_height, frame_width: size of the downsampled frames (area averaging).
        fps: frames per second of the world (one simulator step per frame).
        frames_per_latent: video frames per latent frame of the VAE (temporal stride).
        latent_frames_per_chunk: latent frames generated per env step.
        variants: the variants; the one named ``default_variant`` is used by default.
        keymap: pygame key name ("left", "right", "a", ...) -> action value.
        null_action: action meaning "no key pressed", or ``None`` when the world has
            no no-op (CartPole always pushes left or right).
        default_variant: name of the default variant.
        max_episode_frames: standard truncation length in frames.
        env_kwargs: extra keyword arguments for ``gym.make``.
        palette: part name -> RGB of that part in the env's native render; what the
            variant ``colors`` recolour.
        state_names: names of the simulator state entries (``env.unwrapped.state``).
        physics_hook: ``hook(unwrapped_env)`` called after physics overrides are set,
            to recompute derived attributes.
        run_on_limit: ``limit(state) -> bool``; collection may keep simulating past
            the standard termination until this returns True (``None``: stop at the
            standard termination; a world that never terminates just runs on).
    """

    name: str
    env_id: str
    frame_height: int
    frame_width: int
    fps: int
    variants: tuple[Variant, ...]
    keymap: dict[str, Any]
    null_action: Any
    default_variant: str
    max_episode_frames: int
    frames_per_latent: int = 4
    latent_frames_per_chunk: int = 1
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    palette: dict[str, RGB] = field(default_factory=dict)
    state_names: tuple[str, ...] = ()
    physics_hook: Callable[[gym.Env], None] | None = None
    run_on_limit: Callable[[np.ndarray], bool] | None = None

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if not names:
            raise ValueError(f"world {self.name!r}: variants must not be empty")
        if len(set(names)) != len(names):
            raise ValueError(f"world {self.name!r}: variant names must be unique, got {names}")
        if self.default_variant not in names:
            raise ValueError(
                f"world {self.name!r}: default_variant {self.default_variant!r} is not one of "
                f"the variants {names}"
            )
        for v in self.variants:
            unknown = set(v.colors) - set(self.palette)
            if unknown:
                raise ValueError(
                    f"world {self.name!r}, variant {v.name!r}: colors has unknown parts "
                    f"{sorted(unknown)}; the palette defines {sorted(self.palette)}"
                )
        for arg in ("frame_height", "frame_width", "fps", "frames_per_latent",
                    "latent_frames_per_chunk", "max_episode_frames"):
            if int(getattr(self, arg)) <= 0:
                raise ValueError(f"world {self.name!r}: {arg} must be a positive integer")

    @property
    def frames_per_chunk(self) -> int:
        """Video frames produced by one env step (F)."""
        return self.frames_per_latent * self.latent_frames_per_chunk

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.frame_height, self.frame_width, 3)

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    def make_action_space(self) -> gym.Space:
        """The action space of the underlying gymnasium env (physics overrides do not change it)."""
        env = gym.make(self.env_id, **self.env_kwargs)
        try:
            return env.action_space
        finally:
            env.close()

    def variant(self, name: str | None = None) -> Variant:
        """The variant called ``name`` (the default variant when ``name`` is None)."""
        name = self.default_variant if name is None else name
        for v in self.variants:
            if v.name == name:
                return v
        raise ValueError(
            f"variant {name!r} is not a variant of world {self.name!r}; "
            f"choose one of {list(self.variant_names)}"
        )

    def prompts(self) -> dict[str, str]:
        """Variant name -> prompt."""
        return {v.name: v.prompt for v in self.variants}


# ----------------------------------------------------------------------------- actions


# ----------------------------------------------------------------------------- cartpole


def _cartpole_physics_hook(env: gym.Env) -> None:
    """CartPole caches derived masses; recompute them after overriding length/masses."""
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


def _cartpole_run_on_limit(state: np.ndarray) -> bool:
    """Stop a run-on CartPole episode once the pole is past 45 degrees or the cart leaves the track."""
    x, _, theta, _ = state
    return abs(theta) > math.radians(45.0) or abs(x) > 2.4


CARTPOLE = WorldSpec(
    name="cartpole",
    env_id="CartPole-v1",
    frame_height=64,
    frame_width=96,
    fps=50,  # CartPole's tau = 0.02 s and metadata render_fps = 50
    frames_per_latent=4,
    latent_frames_per_chunk=1,
    variants=(
        Variant("default", "a brown pole balanced on a black cart"),
        Variant(
            "long_red_low_gravity",
            "a long red pole on a black cart under low gravity",
            physics={"length": 0.75, "gravity": 5.0},
            colors={"pole": (220, 30, 30)},
        ),
        Variant(
            "short_blue_strong_push",
            "a short blue pole on a black cart pushed with strong force",
            physics={"length": 0.3, "force_mag": 15.0},
            colors={"pole": (30, 70, 230)},
        ),
        Variant(
            "green_cart_high_gravity",
            "a brown pole on a green cart under high gravity",
            physics={"gravity": 15.0},
            colors={"cart": (20, 150, 50)},
        ),
        Variant(
            "heavy_purple_gentle_push",
            "a heavy purple pole on a black cart pushed gently",
            physics={"masspole": 0.3, "force_mag": 7.0},
            colors={"pole": (140, 40, 180)},
        ),
        Variant(
            "long_teal_orange_cart",
            "a long teal pole on an orange cart",
            physics={"length": 0.65},
            colors={"pole": (0, 150, 150), "cart": (240, 120, 0)},
        ),
    ),
    # CartPole has no no-op: every step pushes left (0) or right (1). With no key
    # pressed the viewer must either repeat the last action or pick one.
    keymap={"left": 0, "right": 1},
    null_action=None,
    default_variant="default",
    max_episode_frames=500,
    # Parts of the native 400x600 render. The cart and the track line are both drawn
    # black, so a "cart" colour also recolours the track.
    palette={"pole": (202, 152, 101), "cart": (0, 0, 0), "axle": (129, 132, 203)},
    state_names=("x", "x_dot", "theta", "theta_dot"),
    physics_hook=_cartpole_physics_hook,
    run_on_limit=_cartpole_run_on_limit,
)


# ----------------------------------------------------------------------------- pendulum

PENDULUM = WorldSpec(
    name="pendulum",
    env_id="Pendulum-v1",
    frame_height=64,
    frame_width=64,
    # gymnasium's metadata render_fps (the simulator's dt is 0.05 s, i.e. 20 steps per
    # simulated second, so playback at 30 fps runs 1.5x faster than simulated time).
    fps=30,
    frames_per_latent=4,
    latent_frames_per_chunk=1,
    variants=(
        Variant("default", "a red pendulum swinging under normal gravity"),
        Variant(
            "blue_low_gravity",
            "a blue pendulum swinging under low gravity",
            physics={"g": 4.0},
            colors={"rod": (40, 70, 220)},
        ),
        Variant(
            "heavy_green",
            "a heavy green pendulum swinging under normal gravity",
            physics={"m": 2.0},
            colors={"rod": (30, 160, 60)},
        ),
    ),
    keymap={"left": [-2.0], "right": [2.0]},
    null_action=[0.0],
    default_variant="default",
    max_episode_frames=200,
    palette={"rod": (204, 77, 77)},
    state_names=("theta", "theta_dot"),
)


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, WorldSpec] = {}


def register_world(spec: WorldSpec, *, overwrite: bool = False) -> None:
    """Make ``spec`` available to :func:`get_world` under ``spec.name``."""
    if not isinstance(spec, WorldSpec):
        raise ValueError(f"spec must be a WorldSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"world {spec.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[spec.name] = spec


def list_worlds() -> list[str]:
    """Names of the registered worlds."""
    return sorted(_REGISTRY)


def get_world(name: str | WorldSpec) -> WorldSpec:
    """The registered world called ``name`` (a WorldSpec is returned unchanged)."""
    if isinstance(name, WorldSpec):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"world {name!r} is unknown; known worlds: {list_worlds()}")
    return _REGISTRY[name]


register_world(CARTPOLE)
register_world(PENDULUM)
