"""The record of a :class:`~cortexlink.tasks.chess_task.ChessTask` game: the participant's moves,
the result, the PGN text and the metrics, and which engines played."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import chess
import chess.pgn

from cortexlink.core.validation import check_positive
from cortexlink.tasks import stockfish as _stockfish
from cortexlink.tasks.chess_engine import ChessEngine


def _engine_name(engine: Any) -> str:
    return str(getattr(engine, "description", type(engine).__name__))


def _engine_kind(engine: Any) -> str:
    if isinstance(engine, _stockfish.StockfishEngine):
        return "stockfish"
    if isinstance(engine, ChessEngine):
        return "builtin"
    return "custom"


def _engine_label(engine: Any) -> str:
    """Which engine played, with its version: ``"Stockfish 15.1"``, ``"cortexlink ChessEngine"`` or the class."""
    kind = _engine_kind(engine)
    if kind == "stockfish":
        return engine.version
    if kind == "builtin":
        return "cortexlink ChessEngine (built-in)"
    return type(engine).__name__


@dataclasses.dataclass
class _MoveRecord:
    """What the participant did for one move."""

    uci: str
    san: str
    seconds: float
    pickup_s: float
    n_wrong: int


class _ChessRecord:
    """Results, PGN and metrics of :class:`~cortexlink.tasks.chess_task.ChessTask`, from the board,
    the move records and the counters its state machine keeps."""

    # ------------------------------------------------------------------ results
    @property
    def result(self) -> str:
        """PGN result: ``"1-0"``, ``"0-1"``, ``"1/2-1/2"`` or ``"*"`` (game not finished)."""
        return self._board.result(claim_draw=True)

    @property
    def termination(self) -> str | None:
        """Why the task ended (``"max_moves"``, ``"checkmate"``, ...), None while it runs."""
        return self._termination

    def participant_outcome(self) -> str:
        """``"win"``, ``"loss"``, ``"draw"`` or ``"unfinished"`` for the participant."""
        res = self.result
        if res == "*":
            return "unfinished"
        if res == "1/2-1/2":
            return "draw"
        white_won = res == "1-0"
        return "win" if white_won == (self._color == chess.WHITE) else "loss"

    def pgn(self) -> str:
        """The game so far as PGN text.

        Headers: ``Event`` ("cortexlink simulated session"), ``Site``, ``Date``, ``Round``,
        ``White``, ``Black``, ``Result`` (and ``SetUp``/``FEN`` for a non-standard start). Each
        participant move carries its time as an ``[%emt h:mm:ss]`` comment.

        Returns
        -------
        str
        """
        game = chess.pgn.Game.from_board(self._board)
        game.headers["Event"] = "cortexlink simulated session"
        game.headers["Site"] = "cortexlink"
        game.headers["Date"] = self.date
        game.headers["Round"] = "-"
        white, black = ((self.participant_name, self.opponent_name) if self._color == chess.WHITE
                        else (self.opponent_name, self.participant_name))
        game.headers["White"] = white
        game.headers["Black"] = black
        game.headers["Result"] = self.result
        records = iter(self._records)
        for node in game.mainline():
            if node.turn() != self._color:  # the side that just moved is the participant
                rec = next(records, None)
                if rec is not None:
                    node.set_emt(rec.seconds)
        return str(game)

    def metrics(self, elapsed_s: float) -> dict[str, Any]:
        """JSON-able figures of the game so far.

        Parameters
        ----------
        elapsed_s : float
            Time the block has run, seconds (> 0).

        Returns
        -------
        dict
            ``n_moves``; ``seconds_per_move``, a dict with ``mean`` and ``median`` (None
            before any move) and ``list`` (one per participant move, in order);
            ``seconds_to_pickup`` (list); ``wrong_selections``; ``n_selections`` (pick-ups,
            put-downs and wrong selections); ``selection_accuracy`` (None before any);
            ``n_clicks_ignored``; ``moves_per_minute``; ``game_over`` (bool), ``termination``
            (``"max_moves"``, ``"checkmate"``, ... or None while running), ``result`` (PGN
            result), ``participant_outcome``, ``participant_color``, ``n_plies``, ``pgn``,
            ``elapsed_s``; ``engine``, the engine that played with its version (e.g.
            ``"Stockfish 15.1"``; ``"participant / opponent"`` when they differ), and
            ``engines``, per side its ``kind``, ``name`` and ``description`` (see :attr:`engines`).
        """
        elapsed_s = check_positive("elapsed_s", elapsed_s)
        secs = [float(m.seconds) for m in self._records]
        n_pickups = self.n_moves + (1 if self._stage == "to" else 0)
        n_sel = n_pickups + self.n_moves + self.wrong_selections
        return {
            "n_moves": self.n_moves,
            "seconds_per_move": {
                "mean": statistics.fmean(secs) if secs else None,
                "median": float(statistics.median(secs)) if secs else None,
                "list": secs,
            },
            "seconds_to_pickup": [float(m.pickup_s) for m in self._records],
            "wrong_selections": self.wrong_selections,
            "n_selections": n_sel,
            "selection_accuracy": (n_sel - self.wrong_selections) / n_sel if n_sel else None,
            "n_clicks_ignored": self.n_clicks_ignored,
            "moves_per_minute": self.n_moves * 60.0 / elapsed_s,
            "game_over": self._board.outcome(claim_draw=True) is not None,
            "termination": self._termination,
            "result": self.result,
            "participant_outcome": self.participant_outcome(),
            "participant_color": self.participant_color,
            "n_plies": len(self._board.move_stack),
            "pgn": self.pgn(),
            "elapsed_s": elapsed_s,
            "engine": self._engine_summary(),
            "engines": self.engines,
        }

    def _engine_summary(self) -> str:
        names = [_engine_label(self.participant_engine), _engine_label(self.opponent)]
        return names[0] if names[0] == names[1] else " / ".join(names)
