"""A minimal pygame window for `render_mode="human"` (pygame is imported lazily)."""
from __future__ import annotations

import numpy as np


def import_pygame():
    try:
        import pygame
    except ImportError as e:  # pragma: no cover - install hint
        raise ImportError("rendering to a window needs pygame: pip install pygame-ce (or pip install 'gymnasium[classic-control]')") from e
    return pygame


class HumanWindow:
    def __init__(self, width: int, height: int, title: str, fps: int):
        pygame = import_pygame()
        self.pygame = pygame
        pygame.display.init()  # display only: pygame.init() would also open audio (ALSA errors on machines without a sound card)
        pygame.display.set_caption(title)
        self.screen = pygame.display.set_mode((width, height))
        self.clock = pygame.time.Clock()
        self.size, self.fps = (width, height), fps

    def show(self, frame: np.ndarray) -> None:
        pg = self.pygame
        pg.event.pump()
        surf = pg.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
        self.screen.blit(pg.transform.scale(surf, self.size), (0, 0))
        pg.display.flip()
        self.clock.tick(self.fps)

    def close(self) -> None:
        self.pygame.display.quit()
