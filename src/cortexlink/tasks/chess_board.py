"""The board of :class:`~cortexlink.tasks.chess_task.ChessTask` on the screen: square geometry
(square centres and the square under the cursor, with the participant's colour at the bottom),
the piece glyphs, and drawing the board with matplotlib (:meth:`draw`, :meth:`save_board_png`)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import chess

from cortexlink.core.validation import check_positive

logger = logging.getLogger("cortexlink.tasks.chess_task")  # the name this code logged under before the split

#: Unicode chess glyphs (the filled set, coloured when drawn), by ``chess.Piece.symbol()``.
PIECE_GLYPHS: dict[str, str] = {
    "K": "\u265a", "Q": "\u265b", "R": "\u265c", "B": "\u265d", "N": "\u265e", "P": "\u265f",
}
_LIGHT = "#eed8b0"
_DARK = "#b58863"
_HIGHLIGHT = "#f6e05e"
_FONT_FAMILY = "DejaVu Sans"


@functools.lru_cache(maxsize=1)
def glyphs_available() -> bool:
    """True when the font matplotlib uses for the pieces (DejaVu Sans, shipped with it) has the glyphs.

    When False, :meth:`ChessTask.draw` draws letters (``K Q R B N P``) instead.
    """
    try:
        from matplotlib import font_manager
        from matplotlib.ft2font import FT2Font

        path = font_manager.findfont(font_manager.FontProperties(family=_FONT_FAMILY), fallback_to_default=True)
        charmap = FT2Font(path).get_charmap()
    except Exception:  # pragma: no cover - depends on the installation
        logger.debug("could not inspect the font for chess glyphs", exc_info=True)
        return False
    return all(ord(g) in charmap for g in PIECE_GLYPHS.values())


class _ChessBoard:
    """Board geometry and drawing of :class:`~cortexlink.tasks.chess_task.ChessTask`, which sets
    ``board_extent``, the participant's colour and the game state these methods read."""

    # ------------------------------------------------------------------ geometry
    @property
    def square_width(self) -> float:
        """Width of one square, screen units."""
        return (self.board_extent[1] - self.board_extent[0]) / 8.0

    def _col_row(self, square: int) -> tuple[int, int]:
        f, r = chess.square_file(square), chess.square_rank(square)
        return (f, r) if self._color == chess.WHITE else (7 - f, 7 - r)

    def square_center(self, square: int | str) -> tuple[float, float]:
        """Centre (x, y) of a square (index or name such as ``"e4"``), screen units."""
        sq = chess.parse_square(square) if isinstance(square, str) else int(square)
        col, row = self._col_row(sq)
        lo, w = self.board_extent[0], self.square_width
        return (lo + (col + 0.5) * w, lo + (row + 0.5) * w)

    def square_at(self, xy: Any) -> int | None:
        """The square (python-chess index) under ``xy``, or None off the board or for a non-finite ``xy``."""
        x, y = float(xy[0]), float(xy[1])
        lo, hi = self.board_extent
        if not (lo <= x <= hi and lo <= y <= hi):  # also False for NaN
            return None
        w = self.square_width
        col, row = min(int((x - lo) / w), 7), min(int((y - lo) / w), 7)
        if self._color == chess.BLACK:
            col, row = 7 - col, 7 - row
        return chess.square(col, row)

    # ------------------------------------------------------------------ drawing
    def draw(self, ax: Any) -> None:
        """Draw the board on a matplotlib axes, in screen units.

        Light and dark squares, the last move's squares highlighted, the pieces (Unicode chess
        glyphs of DejaVu Sans, drawn as paths so they scale with the axes; letters if the font
        lacks them), file and rank labels, and the current target as a ring (the held piece's
        square outlined). Sets the axes limits to the screen, ``[-1, 1]``, with equal aspect.

        Parameters
        ----------
        ax : matplotlib.axes.Axes
        """
        from matplotlib.font_manager import FontProperties
        from matplotlib.patches import Circle, PathPatch, Rectangle
        from matplotlib.textpath import TextPath
        from matplotlib.transforms import Affine2D

        lo, hi = self.board_extent
        w = self.square_width
        last = self._board.move_stack[-1] if self._board.move_stack else None
        lit = {last.from_square, last.to_square} if last else set()
        for sq in chess.SQUARES:
            x, y = self.square_center(sq)
            dark = (chess.square_file(sq) + chess.square_rank(sq)) % 2 == 0  # a1 is dark
            ax.add_patch(Rectangle((x - w / 2, y - w / 2), w, w, facecolor=_DARK if dark else _LIGHT,
                                   edgecolor="none", zorder=1))
            if sq in lit:
                ax.add_patch(Rectangle((x - w / 2, y - w / 2), w, w, facecolor=_HIGHLIGHT, alpha=0.55,
                                       edgecolor="none", zorder=2))
        ax.add_patch(Rectangle((lo, lo), hi - lo, hi - lo, fill=False, edgecolor="0.25", lw=1.0, zorder=3))

        use_glyphs = glyphs_available()
        prop = FontProperties(family=_FONT_FAMILY)
        for sq, piece in self._board.piece_map().items():
            x, y = self.square_center(sq)
            symbol = piece.symbol().upper()
            text = PIECE_GLYPHS[symbol] if use_glyphs else symbol
            path = TextPath((0.0, 0.0), text, size=1.0, prop=prop)
            ext = path.get_extents()
            scale = 0.78 * w / max(ext.width, ext.height)
            tr = (Affine2D().translate(-(ext.x0 + ext.width / 2), -(ext.y0 + ext.height / 2))
                  .scale(scale).translate(x, y))
            white = piece.color == chess.WHITE
            ax.add_patch(PathPatch(tr.transform_path(path), facecolor="white" if white else "black",
                                   edgecolor="black" if white else "0.85", lw=0.8, zorder=4))

        fs = 7
        for i in range(8):
            c = lo + (i + 0.5) * w
            f_label = chess.FILE_NAMES[i if self._color == chess.WHITE else 7 - i]
            r_label = chess.RANK_NAMES[i if self._color == chess.WHITE else 7 - i]
            ax.text(c, lo - 0.02, f_label, ha="center", va="top", fontsize=fs, family=_FONT_FAMILY, zorder=5)
            ax.text(lo - 0.02, c, r_label, ha="right", va="center", fontsize=fs, family=_FONT_FAMILY, zorder=5)

        target = self.current_target()
        if self._stage == "to" and self._plan is not None:
            x, y = self.square_center(self._plan.from_square)
            ax.add_patch(Rectangle((x - w / 2, y - w / 2), w, w, fill=False, edgecolor="tab:green", lw=2.0,
                                   zorder=6))
        if target is not None:
            ax.add_patch(Circle(target.xy, target.radius * 0.9, fill=False, edgecolor="tab:blue", lw=2.0,
                                zorder=6))
        ax.set_xlim(-1.0, 1.0)
        ax.set_ylim(-1.0, 1.0)
        ax.set_aspect("equal")

    def save_board_png(self, path: str | Path, *, size_in: float = 5.0, dpi: int = 100,
                       title: str | None = None) -> Path:
        """Draw the board (see :meth:`draw`) into a PNG file.

        Parameters
        ----------
        path : str or Path
            Output file; its folder is created if needed.
        size_in : float
            Figure width and height, inches (> 0).
        dpi : int
            Resolution, dots per inch (> 0).
        title : str, optional
            Title above the board; default the participant's colour, the move count and the
            last move.

        Returns
        -------
        Path
            The file written.
        """
        from matplotlib.figure import Figure

        size_in = check_positive("size_in", size_in)
        dpi = check_positive("dpi", dpi, integer=True)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if title is None:
            stack = self._board.move_stack
            last = ""
            if stack:
                prev = self._board.copy()
                prev.pop()
                last = f", last {prev.san(stack[-1])}"
            title = f"participant: {self.participant_color}, {self.n_moves} moves{last}"
            if self._termination is not None:
                title += f" ({self._termination}, {self.result})"
        fig = Figure(figsize=(size_in, size_in))
        ax = fig.add_subplot(1, 1, 1)
        self.draw(ax)
        lo, hi = self.board_extent
        ax.set_xlim(lo - 0.02, hi + 0.02)  # crop to the board (the labels lie outside and are kept)
        ax.set_ylim(lo - 0.02, hi + 0.02)
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        return path
