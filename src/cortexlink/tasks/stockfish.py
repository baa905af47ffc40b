"""Stockfish, driven over UCI by python-chess, as a chess engine for the brain-controlled chess task.

:class:`StockfishEngine` has the interface :class:`~cortexlink.tasks.chess_task.ChessTask` uses
from :class:`~cortexlink.tasks.chess_engine.ChessEngine`: ``choose_move(board)``, ``search(board)``
(a :class:`~cortexlink.tasks.chess_engine.SearchResult`), ``last_result`` and ``description``.

Reproducibility
    Stockfish's own weakening (the ``Skill Level`` UCI option) picks among its candidate moves
    with a random generator seeded from the clock, so the same position gives different moves
    from run to run. The default strength control here is therefore cortexlink's own and
    deterministic:

    - every search is limited by a node count (``nodes``), not by time, with ``Threads = 1`` and a
      fixed ``Hash`` size, and starts from a cleared hash table and cleared history
      (``ucinewgame`` before each search), so a position searched now gives the same result as
      the same position searched in a fresh process, whatever was searched before;
    - the search reports its ``multipv`` best moves with their scores, and the move is drawn among
      them with a generator seeded from ``(seed, position hash, ply)``: the best one at
      ``temperature = 0`` (equal scores broken by the draw), else with probability proportional
      to ``exp(score_cp / (100 * temperature))`` (``temperature`` in pawns); with probability
      ``blunder_rate`` a uniformly random legal move is played without searching.

    The same Stockfish version, seed and position thus give the same move on any machine. A
    different Stockfish version may play differently; :attr:`StockfishEngine.description` and
    :attr:`StockfishEngine.version` name the version that played.

    ``skill_level`` (0 to 20) switches to Stockfish's own weakening instead (``multipv`` and
    ``temperature`` are then not used). It is **not reproducible**: the same seed can give a
    different game.
Process
    One Stockfish process per engine, started on the first search (or by :meth:`StockfishEngine.start`)
    and kept for the following ones. :meth:`StockfishEngine.close` (or leaving a ``with`` block, or
    the engine being garbage-collected, or the interpreter exiting) ends it and reaps it; a later
    search starts a new process, which plays the same moves.
Binary
    ``path`` if given, else ``stockfish`` on ``PATH``, else ``/usr/games/stockfish`` (where
    Debian and Ubuntu install it: ``apt-get install stockfish``); see :func:`find_stockfish`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import threading
import time
import weakref
from typing import Any

import chess
import chess.engine
import chess.polyglot
import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.tasks.chess_engine import MATE_CP, SearchResult, _check_int, _check_real

logger = logging.getLogger(__name__)

__all__ = ["StockfishEngine", "StockfishError", "find_stockfish", "INSTALL_HINT", "STOCKFISH_CANDIDATES"]

#: Where Stockfish is looked for after ``PATH`` (Debian/Ubuntu put it in /usr/games, often not on PATH).
STOCKFISH_CANDIDATES: tuple[str, ...] = ("/usr/games/stockfish", "/usr/local/bin/stockfish", "/usr/bin/stockfish")
#: How to get Stockfish, for error and log messages.
INSTALL_HINT = "Debian/Ubuntu: apt-get install stockfish; elsewhere put a stockfish binary on PATH"
_START_TIMEOUT_S = 30.0


class StockfishError(RuntimeError):
    """The Stockfish process failed (could not start, died, or answered nonsense)."""


def find_stockfish(path: str | os.PathLike[str] | None = None) -> str | None:
    """Path of a Stockfish binary, or None when there is none.

    Parameters
    ----------
    path : str or PathLike, optional
        An explicit binary (or a command name looked up on ``PATH``); when given, only it is tried.

    Returns
    -------
    str or None
        ``path`` if it is an executable file, else ``stockfish`` on ``PATH``, else the first
        executable of :data:`STOCKFISH_CANDIDATES`; None if none is found.
    """
    if path is not None:
        p = os.fspath(path)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return os.path.abspath(p)
        return shutil.which(p)
    found = shutil.which("stockfish")
    if found:
        return found
    for cand in STOCKFISH_CANDIDATES:
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def _quit(engine: chess.engine.SimpleEngine) -> None:
    """Stop a SimpleEngine: send ``quit`` and wait until the process has exited and been reaped
    (killing it if it does not answer), then stop python-chess's background thread."""
    try:
        in_loop = asyncio.get_running_loop() is engine.protocol.loop
    except RuntimeError:
        in_loop = False
    if in_loop:  # garbage-collected on python-chess's own thread: waiting there would deadlock
        engine.close()  # closing the transport kills the process; asyncio reaps it
        return
    try:
        engine.quit()  # returns once asyncio has reaped the process
    except Exception:
        logger.debug("Stockfish did not quit cleanly; killing it", exc_info=True)
        try:
            os.kill(engine.transport.get_pid(), signal.SIGKILL)  # type: ignore[attr-defined]
        except Exception:  # pragma: no cover - already gone  # nosec B110
            pass
    finally:
        engine.close()
    try:
        engine.returncode.result(timeout=_START_TIMEOUT_S)
    except Exception:  # pragma: no cover - the loop ended first
        logger.debug("no return code from Stockfish", exc_info=True)


#: Engines with a running process. python-chess runs each process's event loop in a non-daemon
#: thread, and Python joins those threads *before* ``atexit`` handlers and module teardown, so an
#: engine still open at exit would hang the interpreter; they are closed from a hook that runs first.
_LIVE: "weakref.WeakSet[StockfishEngine]" = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for eng in list(_LIVE):
        try:
            eng.close()
        except Exception:  # pragma: no cover
            logger.debug("closing Stockfish at exit failed", exc_info=True)


_register = getattr(threading, "_register_atexit", None)  # runs before non-daemon threads are joined
if _register is not None:
    _register(_close_all_at_exit)
else:  # pragma: no cover - Python < 3.9
    import atexit

    atexit.register(_close_all_at_exit)


class StockfishEngine:
    """Stockfish over UCI with a deterministic, seeded strength control; see the module docstring.

    Parameters
    ----------
    nodes : int
        Node budget per search (>= 1). About 1,000 nodes plays like a club player, 100,000 like
        a master; a search of 10,000 nodes takes a few milliseconds.
    multipv : int
        Number of best moves (1 to 50) the search reports with their scores; the move is drawn
        among them (see ``temperature``).
    temperature : float
        0 (default): play the best move (equal scores broken by the seeded draw). > 0: draw
        among the ``multipv`` moves with probability proportional to
        ``exp(score_cp / (100 * temperature))``, i.e. ``temperature`` is in pawns.
    blunder_rate : float
        Probability in [0, 1] of playing a uniformly random legal move instead of searching.
    seed : int
        Seed (>= 0) of the draws; each search draws from a generator seeded with
        ``(seed, position hash, ply)``, so the move is a pure function of seed and position.
    skill_level : int, optional
        Stockfish's own ``Skill Level`` (0 weakest to 20 full strength). **Not reproducible**
        (Stockfish seeds its choice from the clock). When given, ``multipv`` and ``temperature``
        are not used, so ``temperature`` must be 0.
    hash_mb : int
        Stockfish's hash table size in MiB (1 to 1024). It is part of what makes a search
        reproducible: keep it fixed to compare runs.
    path : str or PathLike, optional
        The Stockfish binary; default :func:`find_stockfish`.

    Attributes
    ----------
    last_result : SearchResult or None
        The result of the latest :meth:`choose_move` / :meth:`search` call.

    Raises
    ------
    ConfigError
        A parameter is out of range or of the wrong type, or no Stockfish binary is found.

    Examples
    --------
    >>> import chess
    >>> with StockfishEngine(nodes=2000, seed=0) as engine:  # doctest: +SKIP
    ...     engine.choose_move(chess.Board("6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1")).uci()
    'a1a8'
    """

    def __init__(self, nodes: int = 10_000, multipv: int = 4, temperature: float = 0.0,
                 blunder_rate: float = 0.0, seed: int = 0, skill_level: int | None = None,
                 hash_mb: int = 16, path: str | os.PathLike[str] | None = None) -> None:
        self.nodes = _check_int("nodes", nodes, 1)
        self.multipv = _check_int("multipv", multipv, 1, 50)
        self.temperature = _check_real("temperature", temperature, 0.0)
        self.blunder_rate = _check_real("blunder_rate", blunder_rate, 0.0, 1.0)
        self.seed = _check_int("seed", seed, 0)
        self.skill_level = None if skill_level is None else _check_int("skill_level", skill_level, 0, 20)
        if self.skill_level is not None and self.temperature > 0.0:
            raise ConfigError(f"temperature must be 0 when skill_level is given (Stockfish then chooses the "
                              f"move itself); got temperature={temperature!r}, skill_level={skill_level!r}")
        self.hash_mb = _check_int("hash_mb", hash_mb, 1, 1024)
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"path must be a string or path-like naming the Stockfish binary; got {path!r}")
        exe = find_stockfish(path)
        if exe is None:
            where = (f"path={os.fspath(path)!r} is not an executable" if path is not None else
                     f"no 'stockfish' on PATH nor in {', '.join(STOCKFISH_CANDIDATES)}")
            raise ConfigError(f"Stockfish not found: {where} ({INSTALL_HINT})")
        self.path = exe
        self.last_result: SearchResult | None = None
        self._engine: chess.engine.SimpleEngine | None = None
        self._finalizer: weakref.finalize | None = None
        self._id_name: str | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ process
    def start(self) -> "StockfishEngine":
        """Start the Stockfish process if it is not running; returns ``self``."""
        with self._lock:
            self._ensure_started()
        return self

    def _ensure_started(self) -> chess.engine.SimpleEngine:
        if self._engine is not None:
            return self._engine
        try:
            engine = chess.engine.SimpleEngine.popen_uci(self.path, timeout=_START_TIMEOUT_S)
        except (OSError, chess.engine.EngineError, chess.engine.EngineTerminatedError, TimeoutError) as exc:
            raise StockfishError(f"could not start Stockfish ({self.path}): {exc}") from exc
        try:
            opts: dict[str, Any] = {"Threads": 1, "Hash": self.hash_mb}
            if "Skill Level" in engine.options:
                opts["Skill Level"] = 20 if self.skill_level is None else self.skill_level
            elif self.skill_level is not None:
                raise StockfishError(f"{self.path} has no 'Skill Level' option; skill_level cannot be used")
            engine.configure({k: v for k, v in opts.items() if k in engine.options})
        except BaseException:
            _quit(engine)
            raise
        self._engine = engine
        self._id_name = str(engine.id.get("name", "Stockfish"))
        self._finalizer = weakref.finalize(self, _quit, engine)
        _LIVE.add(self)
        logger.debug("started %s (%s, pid %s)", self._id_name, self.path, self.pid)
        return engine

    @property
    def pid(self) -> int | None:
        """Process id of the running Stockfish, None when it is not running."""
        if self._engine is None:
            return None
        try:
            return int(self._engine.transport.get_pid())  # type: ignore[attr-defined]
        except Exception:  # pragma: no cover
            return None

    @property
    def running(self) -> bool:
        """True while a Stockfish process is held."""
        return self._engine is not None

    def close(self) -> None:
        """End the Stockfish process (quit, wait for it, reap it). Safe to call twice.

        A later search starts a new process, which plays the same moves.
        """
        with self._lock:
            fin, self._finalizer, self._engine = self._finalizer, None, None
            _LIVE.discard(self)
        if fin is not None:
            fin()  # runs _quit once and detaches it from garbage collection

    def __enter__(self) -> "StockfishEngine":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ description
    @property
    def version(self) -> str:
        """The engine's UCI ``id name``, e.g. ``"Stockfish 15.1"`` (starts the process if needed)."""
        if self._id_name is None:
            self.start()
        assert self._id_name is not None       # start() sets it or raises  # nosec B101
        return self._id_name

    @property
    def description(self) -> str:
        """Short human-readable description (used for PGN player names and task metrics)."""
        if self.skill_level is not None:
            extra = f"Skill Level {self.skill_level}, not reproducible"
        else:
            extra = f"MultiPV {self.multipv}"
            if self.temperature > 0:
                extra += f", temperature {self.temperature:g}"
        if self.blunder_rate > 0:
            extra += f", blunder rate {self.blunder_rate:g}"
        return f"{self.version} ({self.nodes} nodes, {extra})"

    def __repr__(self) -> str:
        return (f"StockfishEngine(nodes={self.nodes}, multipv={self.multipv}, temperature={self.temperature}, "
                f"blunder_rate={self.blunder_rate}, seed={self.seed}, skill_level={self.skill_level}, "
                f"hash_mb={self.hash_mb}, path={self.path!r})")

    # ------------------------------------------------------------------ search
    def choose_move(self, board: chess.Board) -> chess.Move:
        """Pick a legal move for the side to move; ``board`` is not modified.

        Parameters
        ----------
        board : chess.Board
            The position (its move stack, if any, is sent too, for repetitions).

        Returns
        -------
        chess.Move
            A legal move of ``board``.

        Raises
        ------
        ValidationError
            If ``board`` is not a ``chess.Board`` or has no legal move (the game is over).
        StockfishError
            If the Stockfish process fails.
        """
        return self.search(board).move

    def search(self, board: chess.Board) -> SearchResult:
        """Search ``board`` and return the chosen move with its score and search statistics.

        ``scores_cp`` holds the score (centipawns for the side to move, mate as
        ``MATE_CP - plies``) of each of the ``multipv`` moves reported. See :meth:`choose_move`
        for the parameters and errors.
        """
        if not isinstance(board, chess.Board):
            raise ValidationError(f"board must be a chess.Board; got {type(board).__name__}")
        t0 = time.perf_counter()
        legal = list(board.legal_moves)
        if not legal:
            raise ValidationError(f"board must have a legal move for the side to move; got a finished game "
                                  f"({board.fen()})")
        rng = np.random.default_rng([self.seed, chess.polyglot.zobrist_hash(board), board.ply()])
        if self.blunder_rate > 0.0 and rng.random() < self.blunder_rate:
            move = legal[int(rng.integers(len(legal)))]
            return self._finish(SearchResult(move, None, 0, 0, {}, True, time.perf_counter() - t0))
        if len(legal) == 1:
            return self._finish(SearchResult(legal[0], None, 0, 0, {}, False, time.perf_counter() - t0))
        limit = chess.engine.Limit(nodes=self.nodes)
        with self._lock:
            engine = self._ensure_started()
            try:
                if self.skill_level is not None:
                    played = engine.play(board, limit, game=object(), info=chess.engine.INFO_SCORE)
                    infos = [played.info] if played.info else []
                    chosen = played.move
                else:
                    # game=object(): a new "game" each call, so python-chess sends ucinewgame and
                    # Stockfish clears its hash and history: the search depends on the position only.
                    res = engine.analyse(board, limit, multipv=min(self.multipv, len(legal)), game=object(),
                                         info=chess.engine.INFO_SCORE | chess.engine.INFO_PV)
                    infos = res if isinstance(res, list) else [res]
                    chosen = None
            except (chess.engine.EngineError, chess.engine.EngineTerminatedError, TimeoutError) as exc:
                self._engine = None
                fin, self._finalizer = self._finalizer, None
                _LIVE.discard(self)
                if fin is not None:
                    fin()
                raise StockfishError(f"Stockfish failed on {board.fen()}: {exc}") from exc
        scored: list[tuple[chess.Move, int]] = []
        for info in infos:
            pv = info.get("pv")
            score = info.get("score")
            if not pv or score is None or pv[0] not in board.legal_moves:
                continue
            if any(m == pv[0] for m, _ in scored):
                continue
            scored.append((pv[0], int(score.pov(board.turn).score(mate_score=MATE_CP))))
        depth = max((int(i.get("depth", 0)) for i in infos), default=0)
        n_nodes = max((int(i.get("nodes", 0)) for i in infos), default=0)
        if chosen is None:
            if not scored:
                raise StockfishError(f"Stockfish returned no move for {board.fen()}")
            chosen = self._pick(scored, rng)
        if chosen not in board.legal_moves:
            raise StockfishError(f"Stockfish returned an illegal move {chosen} for {board.fen()}")
        scores = {m.uci(): s for m, s in scored}
        result = SearchResult(chosen, scores.get(chosen.uci()), depth, n_nodes, scores, False,
                              time.perf_counter() - t0)
        return self._finish(result)

    def _pick(self, scored: list[tuple[chess.Move, int]], rng: np.random.Generator) -> chess.Move:
        if self.temperature > 0.0:
            s = np.array([sc for _, sc in scored], dtype=np.float64)
            p = np.exp((s - s.max()) / (100.0 * self.temperature))
            p /= p.sum()
            return scored[int(rng.choice(len(scored), p=p))][0]
        best = max(sc for _, sc in scored)
        ties = [m for m, sc in scored if sc == best]
        return ties[int(rng.integers(len(ties)))] if len(ties) > 1 else ties[0]

    def _finish(self, result: SearchResult) -> SearchResult:
        self.last_result = result
        return result

