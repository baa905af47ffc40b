"""Brain-controlled chess: the participant plays moves by clicking squares with the cursor.

The 8 x 8 board is drawn in a square of the screen (by default ``[-0.8, 0.8]`` in x and y),
with the participant's colour at the bottom (white by default). A move is two selections,
*pick up* (click on the piece's square) and *put down* (click on the destination square), the
way people with a brain-computer interface play chess on a tablet.

Who decides the move
    The task, not the participant model: the participant's own engine chooses
    the move when it is the participant's turn, and :meth:`ChessTask.current_target` shows the
    square to click (first the from-square, then the to-square). A simulated participant just
    aims at ``current_target()``, which keeps the participant model free of chess.
Wrong selections
    A click with the cursor on any other square is a wrong selection (event ``"incorrect"``
    with the square): nothing is picked up or put down and the target stays where it was (the
    plan does not change). That includes clicking another of one's own pieces while nothing is
    picked up, and clicking the from-square again while the piece is held. Clicks off the
    board, or while there is no target (the thinking pause, or after the game), are ignored
    (event ``"click_ignored"``) and are not selections.
Opponent
    After the participant's move the opponent engine replies at once (event
    ``"opponent_move"``); then, for ``think_s`` seconds, there is no target (the participant
    looks at the reply) before the next move's from-square lights (``"target_on"``).
Timing
    A move's time runs from the ``"target_on"`` of its from-square to the click that puts the
    piece down, so it includes the pick-up, any wrong selections and the put-down, but not the
    thinking pause.
Engines
    Stockfish (:class:`~cortexlink.tasks.stockfish.StockfishEngine`) when it is installed
    (``apt-get install stockfish``), else the small built-in
    :class:`~cortexlink.tasks.chess_engine.ChessEngine`, which keeps the task (and ``make demo``)
    working on a machine with only Python; see the ``engine`` parameter. Both are reproducible:
    the same seed and engine (and Stockfish version) give the same game. ``metrics()`` names the
    engines that played. The Stockfish processes the task starts are ended when the game ends
    (:meth:`ChessTask.close`, a ``with`` block or garbage collection also end them; :meth:`reset`
    starts them again).
End
    After ``max_moves`` participant moves (the opponent's reply to the last one is still played)
    or when the game is over (checkmate, stalemate, insufficient material, or a draw that could
    be claimed: threefold repetition or the fifty-move rule), with a ``"done"`` event.

This module holds the task's state machine; the board geometry and drawing are in
:mod:`cortexlink.tasks.chess_board`, the results, PGN and metrics in
:mod:`cortexlink.tasks.chess_record`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import numbers
from typing import Any, Sequence

import chess
import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.validation import check_positive
from cortexlink.tasks.base import Target, Task, TaskEvent
from cortexlink.tasks import stockfish as _stockfish
from cortexlink.tasks.chess_board import PIECE_GLYPHS, _ChessBoard, glyphs_available
from cortexlink.tasks.chess_engine import ChessEngine
from cortexlink.tasks.chess_record import _ChessRecord, _engine_kind, _engine_label, _engine_name, _MoveRecord

logger = logging.getLogger(__name__)

__all__ = ["ChessTask", "PIECE_GLYPHS", "glyphs_available", "ENGINES", "STOCKFISH_PARTICIPANT", "STOCKFISH_OPPONENT"]

#: Values of ``ChessTask(engine=...)``.
ENGINES = ("auto", "stockfish", "builtin")
#: StockfishEngine settings of the default participant engine (seeded with the task's ``seed``):
#: a strong player that still varies between near-equal moves.
STOCKFISH_PARTICIPANT: dict[str, Any] = {"nodes": 5_000, "multipv": 4, "temperature": 0.2}
#: StockfishEngine settings of the default opponent (seeded with ``seed + 1``): a weaker player
#: (a small search, more spread among its six best moves).
STOCKFISH_OPPONENT: dict[str, Any] = {"nodes": 1_000, "multipv": 6, "temperature": 0.6}

_EPS_S = 1e-9


def _check_engine(name: str, engine: Any) -> Any:
    if not callable(getattr(engine, "choose_move", None)):
        raise ConfigError(f"{name} must be a ChessEngine (or an object with a choose_move(board) method); "
                          f"got {type(engine).__name__}")
    return engine


class ChessTask(_ChessBoard, _ChessRecord, Task):
    """Chess played by cursor clicks against an engine; see the module docstring for the rules.

    Parameters
    ----------
    participant_engine : StockfishEngine or ChessEngine, optional
        Chooses the participant's moves (the moves the participant is asked to make). Default
        per ``engine``: ``StockfishEngine(**STOCKFISH_PARTICIPANT, seed=seed)`` or
        ``ChessEngine(depth=2, seed=seed)``. Any object with ``choose_move(board) -> chess.Move``
        will do; the task does not close engines it was given.
    opponent : StockfishEngine or ChessEngine, optional
        Chooses the replies. Default per ``engine``: ``StockfishEngine(**STOCKFISH_OPPONENT,
        seed=seed + 1)`` or ``ChessEngine(depth=1, seed=seed + 1)``.
    engine : {"auto", "stockfish", "builtin"}
        Which engine makes the default engines above. ``"auto"`` (default): Stockfish when a
        binary is found (``stockfish_path``, else ``stockfish`` on ``PATH``, else
        ``/usr/games/stockfish``), else the built-in engine, with one INFO log line saying so.
        ``"stockfish"``: Stockfish or a :class:`ConfigError` saying how to install it.
        ``"builtin"``: the built-in engine.
    stockfish_path : str, optional
        The Stockfish binary to use.
    opponent_skill_level : int, optional
        Stockfish's own ``Skill Level`` (0 to 20) for the default opponent, instead of the
        seeded, reproducible strength control. **Not reproducible**: the same seed can give a
        different game. Ignored (with a log line) when ``engine="auto"`` falls back to the
        built-in engine; an error with ``engine="builtin"``.
    participant_color : {"white", "black"}
        The participant's side; it is drawn at the bottom of the board. With ``"black"`` (or a
        ``start_fen`` with the opponent to move) the opponent moves first, on the first update.
    max_moves : int
        Participant moves to play (>= 1) before the task is done.
    think_s : float
        Pause (>= 0 s) after the opponent's reply during which there is no target.
    board_extent : (float, float)
        The board covers ``[low, high]`` in both x and y, screen units (``-1 <= low < high <= 1``).
    seed : int
        Seed (>= 0) of the default engines.
    start_fen : str, optional
        Starting position (FEN); default the standard start. It must be a valid position with a
        legal move.
    participant_name, opponent_name : str, optional
        Player names for the PGN; default ``"cortexlink participant"`` and the opponent engine's
        description.
    date : str or datetime.date, optional
        The PGN ``Date`` (``"YYYY.MM.DD"``); default today's date when the task is built.

    Attributes
    ----------
    events : list of TaskEvent
        Every event since the last :meth:`reset`.

    Notes
    -----
    Events (``TaskEvent.kind`` and ``data``):

    - ``"target_on"``: a new target: ``square`` (e.g. ``"e2"``), ``stage`` (``"from"`` or ``"to"``),
      ``xy``, ``n_move`` (1-based participant move). The first one is emitted on the first
      :meth:`update`, which starts the task; the from-square target is shown from :meth:`reset`
      on when the participant moves first.
    - ``"pickup"``: the piece was picked up: ``square``, ``piece``, ``seconds`` since target on.
    - ``"move"``: the participant's move was played: ``uci``, ``san``, ``seconds`` (its time),
      ``n_move``.
    - ``"opponent_move"``: ``uci``, ``san``.
    - ``"incorrect"``: a wrong selection: ``square`` clicked, ``expected`` square, ``stage``.
    - ``"click_ignored"``: ``reason`` ``"off_board"`` or ``"no_target"``, cursor ``xy``.
    - ``"done"``: ``reason`` (``"max_moves"``, ``"checkmate"``, ``"stalemate"``, ...),
      ``result`` (PGN result), ``n_moves``.

    A promotion is always to a queen. The engines run inside :meth:`update` (Stockfish's
    default searches take a few ms, the built-in engine's tens of ms), on the bin where the
    participant's move lands and on the bin the next target lights.

    Examples
    --------
    >>> import numpy as np
    >>> task = ChessTask(max_moves=1, think_s=0.0, date="2024.01.01")
    >>> for t in (0.0, 0.5):  # click on the from-square, then on the to-square
    ...     events = task.update(t, np.array(task.current_target().xy), click=True)
    >>> task.done, task.metrics(1.0)["n_moves"]
    (True, 1)
    """

    name = "chess"

    def __init__(self, participant_engine: Any | None = None, opponent: Any | None = None,
                 participant_color: str = "white", max_moves: int = 10, think_s: float = 0.5,
                 board_extent: Sequence[float] = (-0.8, 0.8), seed: int = 0, start_fen: str | None = None,
                 participant_name: str = "cortexlink participant", opponent_name: str | None = None,
                 date: str | _dt.date | None = None, engine: str = "auto", stockfish_path: str | None = None,
                 opponent_skill_level: int | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
        self.seed = int(seed)
        if not isinstance(engine, str) or engine not in ENGINES:
            raise ConfigError(f"engine must be one of {ENGINES}; got {engine!r}")
        if stockfish_path is not None and not isinstance(stockfish_path, str):
            raise ConfigError(f"stockfish_path must be a string; got {stockfish_path!r}")
        if opponent_skill_level is not None and (isinstance(opponent_skill_level, bool)
                                                 or not isinstance(opponent_skill_level, numbers.Integral)
                                                 or not 0 <= opponent_skill_level <= 20):
            raise ConfigError(f"opponent_skill_level must be None or an integer in [0, 20]; "
                              f"got {opponent_skill_level!r}")
        if opponent_skill_level is not None and engine == "builtin":
            raise ConfigError("opponent_skill_level is a Stockfish option; it cannot be used with engine='builtin'")
        if participant_engine is not None:
            _check_engine("participant_engine", participant_engine)
        if opponent is not None:
            _check_engine("opponent", opponent)
        self._owned: list[Any] = []  # engines the task made, closed when the game ends
        use_sf = False
        if participant_engine is None or opponent is None:
            use_sf = self._choose_stockfish(engine, stockfish_path, opponent_skill_level)
        self.engine_choice = engine  # as asked; see engines for what plays
        if participant_engine is None:
            participant_engine = (
                _stockfish.StockfishEngine(**STOCKFISH_PARTICIPANT, seed=self.seed, path=stockfish_path)
                if use_sf else ChessEngine(depth=2, seed=self.seed))
            self._owned.append(participant_engine)
        if opponent is None:
            if use_sf and opponent_skill_level is not None:
                opponent = _stockfish.StockfishEngine(nodes=STOCKFISH_OPPONENT["nodes"], multipv=1, seed=self.seed + 1,
                                                      skill_level=opponent_skill_level, path=stockfish_path)
            elif use_sf:
                opponent = _stockfish.StockfishEngine(**STOCKFISH_OPPONENT, seed=self.seed + 1, path=stockfish_path)
            else:
                opponent = ChessEngine(depth=1, seed=self.seed + 1)
            self._owned.append(opponent)
        self.participant_engine = participant_engine
        self.opponent = opponent
        if participant_color not in ("white", "black"):
            raise ConfigError(f"participant_color must be one of ('white', 'black'); got {participant_color!r}")
        self.participant_color = participant_color
        self._color: bool = chess.WHITE if participant_color == "white" else chess.BLACK
        if isinstance(max_moves, bool) or not isinstance(max_moves, numbers.Integral) or max_moves < 1:
            raise ConfigError(f"max_moves must be an integer >= 1; got {max_moves!r}")
        self.max_moves = int(max_moves)
        self.think_s = check_positive("think_s", think_s, allow_zero=True)
        try:
            lo, hi = (float(v) for v in board_extent)
        except (TypeError, ValueError):
            raise ConfigError(f"board_extent must be a (low, high) pair of numbers in [-1, 1]; "
                              f"got {board_extent!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and -1.0 <= lo < hi <= 1.0):
            raise ConfigError(f"board_extent must be a (low, high) pair with -1 <= low < high <= 1; "
                              f"got {board_extent!r}")
        self.board_extent = (lo, hi)
        self.start_fen = chess.STARTING_FEN if start_fen is None else start_fen
        try:
            start = chess.Board(self.start_fen)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"start_fen must be a valid FEN; got {start_fen!r} ({exc})") from None
        if not start.is_valid() or start.is_game_over(claim_draw=True):
            raise ConfigError(f"start_fen must be a legal position where the game is not over; got {start_fen!r}")
        for pname, pval in (("participant_name", participant_name), ("opponent_name", opponent_name)):
            if pval is not None and not isinstance(pval, str):
                raise ConfigError(f"{pname} must be a string; got {pval!r}")
        self.participant_name = participant_name
        self._opponent_name = opponent_name
        if date is None:
            date = _dt.date.today()
        if isinstance(date, _dt.date):
            date = date.strftime("%Y.%m.%d")
        if not isinstance(date, str):
            raise ConfigError(f"date must be a 'YYYY.MM.DD' string or a datetime.date; got {date!r}")
        self.date = date
        try:
            self.reset()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _choose_stockfish(engine: str, stockfish_path: str | None, skill_level: int | None) -> bool:
        """True when the default engines are Stockfish; see the ``engine`` parameter."""
        if engine == "builtin":
            return False
        if _stockfish.find_stockfish(stockfish_path) is not None:
            return True
        looked = (f"stockfish_path={stockfish_path!r}" if stockfish_path is not None else
                  f"'stockfish' on PATH and {', '.join(_stockfish.STOCKFISH_CANDIDATES)}")
        if engine == "stockfish":
            raise ConfigError(f"engine='stockfish' but no Stockfish binary was found (looked for {looked}); "
                              f"install it ({_stockfish.INSTALL_HINT}), pass stockfish_path, or use "
                              f"engine='auto' or 'builtin'")
        logger.info("chess: Stockfish not found (looked for %s); the built-in engine plays%s (%s)", looked,
                    ", opponent_skill_level ignored" if skill_level is not None else "", _stockfish.INSTALL_HINT)
        return False

    @property
    def opponent_name(self) -> str:
        """The opponent's name in the PGN: as given, else the opponent engine's description."""
        return self._opponent_name if self._opponent_name is not None else _engine_name(self.opponent)

    @opponent_name.setter
    def opponent_name(self, value: str | None) -> None:
        self._opponent_name = value

    # ------------------------------------------------------------------ engine processes
    def close(self) -> None:
        """End the Stockfish processes of the engines the task made (not of engines it was given).

        Done by itself when the game ends; :meth:`reset` (or a later move) starts them again.
        """
        for eng in getattr(self, "_owned", ()):
            closer = getattr(eng, "close", None)
            if callable(closer):
                closer()

    def __enter__(self) -> "ChessTask":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def engines(self) -> dict[str, dict[str, str]]:
        """Which engines play: per side (``"participant"``, ``"opponent"``), ``kind``
        (``"stockfish"``, ``"builtin"`` or ``"custom"``), ``name`` (with the version, e.g.
        ``"Stockfish 15.1"``) and ``description`` (name and settings)."""
        return {side: {"kind": _engine_kind(e), "name": _engine_label(e), "description": _engine_name(e)}
                for side, e in (("participant", self.participant_engine), ("opponent", self.opponent))}

    # ------------------------------------------------------------------ state machine
    def reset(self) -> None:
        """Start a new game from ``start_fen``; the engines are deterministic, so it replays the same."""
        self._board = chess.Board(self.start_fen)
        self._t_start: float | None = None
        self._stage = "opponent"  # "from", "to", "think", "opponent" or "done"
        self._plan: chess.Move | None = None
        self._pending_target_on = False
        self._think_until = -math.inf
        self._t_target_on = 0.0
        self._t_pickup = 0.0
        self._wrong_this_move = 0
        self._termination: str | None = None
        self._done = False
        self.n_moves = 0
        self.wrong_selections = 0
        self.n_clicks_ignored = 0
        self._records: list[_MoveRecord] = []
        self.events: list[TaskEvent] = []
        if self._board.turn == self._color:
            self._plan_move()
            self._pending_target_on = True

    @property
    def done(self) -> bool:
        return self._done

    @property
    def board(self) -> chess.Board:
        """A copy of the current position (with its move stack)."""
        return self._board.copy()

    @property
    def planned_move(self) -> chess.Move | None:
        """The move the participant is asked to make now (None between moves)."""
        return self._plan if self._stage in ("from", "to") else None

    @property
    def stage(self) -> str:
        """``"from"`` (pick up), ``"to"`` (put down), ``"think"``, ``"opponent"`` or ``"done"``."""
        return self._stage

    def current_target(self) -> Target | None:
        """The square to click now (radius half a square), or None while thinking / when done."""
        if self._stage not in ("from", "to") or self._plan is None:
            return None
        sq = self._plan.from_square if self._stage == "from" else self._plan.to_square
        return Target(xy=self.square_center(sq), radius=0.5 * self.square_width, click=True)

    def update(self, t_s: float, cursor_xy: np.ndarray, click: bool) -> list[TaskEvent]:
        """Advance one bin; see the module docstring for the rules and the class's for the events.

        Parameters
        ----------
        t_s : float
            Session time of the bin, seconds.
        cursor_xy : array (2,)
            Cursor position after the effector moved, screen units.
        click : bool
            True if a click fired on this bin.

        Returns
        -------
        list of TaskEvent
            The events of this bin (also appended to :attr:`events`).
        """
        if self._done:
            return []
        t_s = float(t_s)
        out: list[TaskEvent] = []
        if self._t_start is None:
            self._t_start = t_s
        if self._stage == "opponent":
            self._opponent_reply(t_s, out)
        if self._pending_target_on:
            self._pending_target_on = False
            self._target_on(t_s, out)
        if click:
            self._handle_click(t_s, cursor_xy, out)
        if self._stage == "think" and t_s >= self._think_until - _EPS_S:
            self._plan_move()
            self._target_on(t_s, out)
        self.events.extend(out)
        return out

    # ------------------------------------------------------------------ internals
    def _plan_move(self) -> None:
        move = self.participant_engine.choose_move(self._board.copy())
        if not isinstance(move, chess.Move) or move not in self._board.legal_moves:
            raise ValidationError(f"participant_engine.choose_move must return a legal chess.Move; got {move!r} "
                                  f"in {self._board.fen()}")
        if move.promotion is not None and move.promotion != chess.QUEEN:
            move = chess.Move(move.from_square, move.to_square, promotion=chess.QUEEN)
        self._plan = move
        self._stage = "from"
        self._wrong_this_move = 0

    def _target_on(self, t_s: float, out: list[TaskEvent]) -> None:
        assert self._plan is not None        # called only once a move is planned  # nosec B101
        sq = self._plan.from_square if self._stage == "from" else self._plan.to_square
        if self._stage == "from":
            self._t_target_on = t_s
        x, y = self.square_center(sq)
        out.append(TaskEvent(t_s, "target_on", {"square": chess.square_name(sq), "stage": self._stage,
                                                "xy": [x, y], "n_move": self.n_moves + 1}))

    def _handle_click(self, t_s: float, cursor_xy: Any, out: list[TaskEvent]) -> None:
        xy = [float(cursor_xy[0]), float(cursor_xy[1])]
        if self._stage not in ("from", "to"):
            self.n_clicks_ignored += 1
            out.append(TaskEvent(t_s, "click_ignored", {"reason": "no_target", "xy": xy}))
            return
        sq = self.square_at(xy)
        if sq is None:
            self.n_clicks_ignored += 1
            out.append(TaskEvent(t_s, "click_ignored", {"reason": "off_board", "xy": xy}))
            return
        assert self._plan is not None        # a plan exists while targets are shown  # nosec B101
        expected = self._plan.from_square if self._stage == "from" else self._plan.to_square
        if sq != expected:
            self.wrong_selections += 1
            self._wrong_this_move += 1
            out.append(TaskEvent(t_s, "incorrect", {"square": chess.square_name(sq),
                                                    "expected": chess.square_name(expected),
                                                    "stage": self._stage, "xy": xy}))
            return
        if self._stage == "from":
            piece = self._board.piece_at(sq)
            self._t_pickup = t_s
            self._stage = "to"
            out.append(TaskEvent(t_s, "pickup", {"square": chess.square_name(sq),
                                                 "piece": piece.symbol() if piece else None,
                                                 "seconds": t_s - self._t_target_on}))
            self._target_on(t_s, out)
            return
        self._play_participant_move(t_s, out)

    def _play_participant_move(self, t_s: float, out: list[TaskEvent]) -> None:
        move = self._plan
        assert move is not None      # a plan exists while a move is being played  # nosec B101
        san = self._board.san(move)
        self._board.push(move)
        self.n_moves += 1
        seconds = t_s - self._t_target_on
        self._records.append(_MoveRecord(move.uci(), san, seconds, self._t_pickup - self._t_target_on,
                                      self._wrong_this_move))
        out.append(TaskEvent(t_s, "move", {"uci": move.uci(), "san": san, "seconds": seconds,
                                           "n_move": self.n_moves}))
        self._plan = None
        if self._check_game_over(t_s, out):
            return
        self._opponent_reply(t_s, out)

    def _opponent_reply(self, t_s: float, out: list[TaskEvent]) -> None:
        move = self.opponent.choose_move(self._board.copy())
        if not isinstance(move, chess.Move) or move not in self._board.legal_moves:
            raise ValidationError(f"opponent.choose_move must return a legal chess.Move; got {move!r} "
                                  f"in {self._board.fen()}")
        san = self._board.san(move)
        self._board.push(move)
        out.append(TaskEvent(t_s, "opponent_move", {"uci": move.uci(), "san": san}))
        if self._check_game_over(t_s, out):
            return
        if self.n_moves >= self.max_moves:
            self._finish(t_s, "max_moves", out)
            return
        self._stage = "think"
        self._think_until = t_s + self.think_s

    def _check_game_over(self, t_s: float, out: list[TaskEvent]) -> bool:
        outcome = self._board.outcome(claim_draw=True)
        if outcome is None:
            return False
        self._finish(t_s, outcome.termination.name.lower(), out)
        return True

    def _finish(self, t_s: float, reason: str, out: list[TaskEvent]) -> None:
        self._termination = reason
        self._stage = "done"
        self._done = True
        self._plan = None
        out.append(TaskEvent(t_s, "done", {"reason": reason, "result": self.result, "n_moves": self.n_moves}))
        logger.debug("chess task done at %.3f s: %s (%s)", t_s, reason, self.result)
        self.close()
