"""A small alpha-beta chess engine for the brain-controlled chess task.

python-chess supplies the rules (legal moves, check, mate, draws); this module supplies the
choice of move. It is deliberately small and deterministic: the chess task needs *a* plausible
move for the participant to make and *a* plausible reply, quickly, not strong play.

Search
    Negamax with alpha-beta pruning, iterative deepening from 1 ply to ``depth`` plies, and a
    quiescence search on captures at the leaves (stand-pat, captures ordered most valuable
    victim / least valuable attacker first, delta pruning; a side in check searches all its
    evasions for the first ``check_plies`` quiescence plies, so mates delivered at the horizon
    are seen). Checkmate scores ``MATE_CP - ply`` (quicker mates score higher); stalemate, the
    fifty-move rule and a repeated position inside the search score 0.
Effort
    A fixed node budget (``max_nodes``) rather than a clock, so the same position and seed give
    the same move on any machine. An iteration that runs out of nodes is discarded and the last
    completed one is used.
Evaluation
    Material (pawn 100, knight 320, bishop 330, rook 500, queen 900 centipawns) plus piece-square
    terms built from simple formulas (centralisation, pawn advance, rook on the seventh rank,
    king shelter in the middlegame and king centralisation in the endgame, blended by the
    remaining non-pawn material), plus a bishop-pair bonus.
Choice
    Among the root moves of equal best score one is drawn with a generator seeded from
    ``(seed, position, ply)``, so the choice is a pure function of seed and position (a replayed
    game replays exactly). ``temperature > 0`` instead draws a root move with probability
    proportional to ``exp(score_cp / (100 * temperature))`` (temperature in pawns), and with
    probability ``blunder_rate`` a uniformly random legal move is played without searching. These
    two knobs let the participant's engine and the opponent's differ in strength. Promotions
    to a rook or bishop are never played (a queen does at least as well here, stalemate tricks
    aside); knight promotions are, when they score strictly better than the queen.

The engine was written for cortexlink; it borrows no other engine's code or tables.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import time
from typing import Any

import chess
import chess.polyglot
import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError

logger = logging.getLogger(__name__)

__all__ = ["ChessEngine", "SearchResult", "evaluate", "PIECE_VALUES_CP", "MATE_CP"]

#: Material values in centipawns (the king is never captured; its value is 0 in the sum).
PIECE_VALUES_CP: dict[int, int] = {
    chess.PAWN: 100,
    chess.KNIGHT: 320,
    chess.BISHOP: 330,
    chess.ROOK: 500,
    chess.QUEEN: 900,
    chess.KING: 0,
}
#: Score of delivering mate now; a mate found ``ply`` plies from the root scores ``MATE_CP - ply``.
MATE_CP = 100_000
_INF = 10 * MATE_CP
_MAX_DEPTH = 8
_BISHOP_PAIR_CP = 30
# Non-pawn material of the starting position (2 N, 2 B, 2 R, 1 Q per side): the middlegame end.
_OPENING_NPM = 2 * (2 * 320 + 2 * 330 + 2 * 500 + 900)
# Move-ordering key for an attacker that is the king (MVV-LVA uses the attacker's value).
_ORDER_VALUE = {**PIECE_VALUES_CP, chess.KING: 1000}
_SKIPPED_PROMOTIONS = (chess.ROOK, chess.BISHOP)


# ---------------------------------------------------------------------------- piece-square terms
def _centrality(file_idx: int, rank_idx: int) -> int:
    """3 on the four centre squares, 2 on the ring around them, 1 on the next ring, 0 on the rim."""
    ring = max(abs(2 * file_idx - 7), abs(2 * rank_idx - 7)) // 2  # 0 (centre) .. 3 (rim)
    return 3 - ring


def _pst_value(piece_type: int, file_idx: int, rank_idx: int, endgame: bool = False) -> int:
    """Positional bonus, centipawns, of a white piece on (file, rank); mirror the rank for black."""
    c = _centrality(file_idx, rank_idx)
    if piece_type == chess.PAWN:
        if rank_idx in (0, 7):  # pawns never stand there
            return 0
        advance = rank_idx - 1  # 0 on the home rank .. 5 on the seventh
        value = 6 * advance
        if file_idx in (3, 4):  # d and e pawns: occupy the centre, do not stay home
            value += 20 if rank_idx in (3, 4) else (-12 if rank_idx == 1 else 0)
        if rank_idx == 6:
            value += 30  # one step from promotion
        return value
    if piece_type == chess.KNIGHT:
        return -25 + 15 * c - (10 if rank_idx == 0 else 0)
    if piece_type == chess.BISHOP:
        return -10 + 7 * c - (10 if rank_idx == 0 else 0)
    if piece_type == chess.ROOK:
        return (20 if rank_idx == 6 else 0) + (5 if file_idx in (3, 4) else 0)
    if piece_type == chess.QUEEN:
        return -5 + 3 * c
    if piece_type == chess.KING:
        if endgame:
            return -30 + 15 * c
        shelter = 15 if (rank_idx == 0 and file_idx in (1, 2, 6)) else 0
        return shelter - 20 * rank_idx
    raise ValueError(f"unknown piece type {piece_type}")


def _build_tables() -> tuple[dict[bool, dict[int, list[int]]], dict[bool, list[int]], dict[bool, list[int]]]:
    """Per colour and piece type, material + positional value of each square, signed for White."""
    tables: dict[bool, dict[int, list[int]]] = {chess.WHITE: {}, chess.BLACK: {}}
    king_mg: dict[bool, list[int]] = {}
    king_eg: dict[bool, list[int]] = {}
    for color, sign in ((chess.WHITE, 1), (chess.BLACK, -1)):
        def rank_of(sq: int, color: bool = color) -> int:
            r = chess.square_rank(sq)
            return r if color == chess.WHITE else 7 - r

        for pt in (chess.PAWN, chess.KNIGHT, chess.BISHOP, chess.ROOK, chess.QUEEN):
            tables[color][pt] = [
                sign * (PIECE_VALUES_CP[pt] + _pst_value(pt, chess.square_file(sq), rank_of(sq)))
                for sq in chess.SQUARES
            ]
        king_mg[color] = [sign * _pst_value(chess.KING, chess.square_file(sq), rank_of(sq)) for sq in chess.SQUARES]
        king_eg[color] = [sign * _pst_value(chess.KING, chess.square_file(sq), rank_of(sq), endgame=True)
                          for sq in chess.SQUARES]
    return tables, king_mg, king_eg


_TABLES, _KING_MG, _KING_EG = _build_tables()


def evaluate(board: chess.Board) -> int:
    """Static evaluation of a position, centipawns from White's point of view.

    Material plus piece-square terms plus a bishop-pair bonus; the king's term is blended
    between its middlegame and endgame tables by the non-pawn material left on the board. It
    does not look for mate or stalemate (the search does).

    Parameters
    ----------
    board : chess.Board
        The position.

    Returns
    -------
    int
        Positive when White stands better.

    Examples
    --------
    >>> import chess
    >>> evaluate(chess.Board())
    0
    """
    score = 0
    occ = board.occupied_co
    for color in (chess.WHITE, chess.BLACK):
        own = occ[color]
        t = _TABLES[color]
        for pt, bb in ((chess.PAWN, board.pawns), (chess.KNIGHT, board.knights), (chess.BISHOP, board.bishops),
                       (chess.ROOK, board.rooks), (chess.QUEEN, board.queens)):
            table = t[pt]
            bb &= own
            while bb:  # lowest set bit first
                low = bb & -bb
                score += table[low.bit_length() - 1]
                bb ^= low
        if (board.bishops & own).bit_count() >= 2:
            score += _BISHOP_PAIR_CP if color == chess.WHITE else -_BISHOP_PAIR_CP
    npm = (320 * board.knights.bit_count() + 330 * board.bishops.bit_count()
           + 500 * board.rooks.bit_count() + 900 * board.queens.bit_count())
    phase = min(npm, _OPENING_NPM) / _OPENING_NPM  # 1: middlegame, 0: bare endgame
    for color in (chess.WHITE, chess.BLACK):
        king_bb = board.kings & occ[color]
        if king_bb:
            ksq = chess.msb(king_bb)
            score += int(round(phase * _KING_MG[color][ksq] + (1.0 - phase) * _KING_EG[color][ksq]))
    return score


# ---------------------------------------------------------------------------- search
@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What :meth:`ChessEngine.search` found.

    Attributes
    ----------
    move : chess.Move
        The move chosen.
    score_cp : int or None
        Its score in centipawns for the side to move (``MATE_CP - n`` = mate in ``n`` plies);
        None when the move was drawn at random (``blunder_rate``) or was the only legal move.
    depth : int
        Depth of the last completed iteration, plies (0 when no search was run).
    n_nodes : int
        Nodes visited (search and quiescence).
    scores_cp : dict
        UCI move -> score of every root move in the last completed iteration (exact for ties
        with the best and, with ``temperature > 0``, for every move; otherwise upper bounds).
    random_move : bool
        True when the move was drawn uniformly (``blunder_rate``).
    elapsed_s : float
        Wall-clock time of the call, seconds (for logs only; the search itself is node-limited).
    """

    move: chess.Move
    score_cp: int | None
    depth: int
    n_nodes: int
    scores_cp: dict[str, int]
    random_move: bool
    elapsed_s: float


class _OutOfNodes(Exception):
    """Raised inside the search when the node budget is spent."""


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < lo or (hi is not None and value > hi):
        allowed = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise ConfigError(f"{name} must be {allowed}; got {value!r}")
    return int(value)


def _check_real(name: str, value: Any, lo: float, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < lo or (hi is not None and value > hi):
        allowed = f"a finite number in [{lo}, {hi}]" if hi is not None else f"a finite number >= {lo}"
        raise ConfigError(f"{name} must be {allowed}; got {value!r}")
    return float(value)


class ChessEngine:
    """Small negamax alpha-beta engine with quiescence search; python-chess does the rules.

    Parameters
    ----------
    depth : int
        Full-width search depth in plies, 1 to 8 (iterative deepening from 1). Depth 2 (the
        default) sees the opponent's best reply to each move, plus captures to quiescence.
    seed : int
        Seed (>= 0) of the tie-breaking / temperature / blunder draws. Each call draws from a
        generator seeded with ``(seed, position hash, ply)``, so the move is a pure function of
        seed and position.
    blunder_rate : float
        Probability in [0, 1] of playing a uniformly random legal move instead of searching.
    max_nodes : int
        Node budget per call (>= 100). An iteration that exceeds it is abandoned and the
        previous iteration's choice is used, so a call has bounded cost.
    temperature : float
        0 (default): play a best-scoring move (ties broken by the seeded draw). > 0: draw a root
        move with probability proportional to ``exp(score_cp / (100 * temperature))``, i.e.
        ``temperature`` is in pawns; all root moves are then searched with a full window.
    quiescence_plies : int
        Maximum depth of the capture search beyond the horizon, 0 to 16 (0 disables it).
    check_plies : int
        For this many quiescence plies (0 to ``quiescence_plies``) a side in check searches all
        its evasions rather than standing pat, so mates at the horizon are found.

    Attributes
    ----------
    last_result : SearchResult or None
        The result of the latest :meth:`choose_move` / :meth:`search` call.

    Examples
    --------
    >>> import chess
    >>> engine = ChessEngine(depth=2, seed=0)
    >>> board = chess.Board("6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1")
    >>> engine.choose_move(board).uci()  # back-rank mate
    'a1a8'
    """

    def __init__(self, depth: int = 2, seed: int = 0, blunder_rate: float = 0.0, max_nodes: int = 20000,
                 temperature: float = 0.0, quiescence_plies: int = 8, check_plies: int = 2) -> None:
        self.depth = _check_int("depth", depth, 1, _MAX_DEPTH)
        self.seed = _check_int("seed", seed, 0)
        self.blunder_rate = _check_real("blunder_rate", blunder_rate, 0.0, 1.0)
        self.max_nodes = _check_int("max_nodes", max_nodes, 100)
        self.temperature = _check_real("temperature", temperature, 0.0)
        self.quiescence_plies = _check_int("quiescence_plies", quiescence_plies, 0, 16)
        self.check_plies = _check_int("check_plies", check_plies, 0, self.quiescence_plies)
        self.last_result: SearchResult | None = None
        self._n_nodes = 0

    def __repr__(self) -> str:
        return (f"ChessEngine(depth={self.depth}, seed={self.seed}, blunder_rate={self.blunder_rate}, "
                f"max_nodes={self.max_nodes}, temperature={self.temperature})")

    @property
    def description(self) -> str:
        """Short human-readable description (used for PGN player names)."""
        extra = ""
        if self.blunder_rate > 0:
            extra += f", blunder rate {self.blunder_rate:g}"
        if self.temperature > 0:
            extra += f", temperature {self.temperature:g}"
        return f"cortexlink ChessEngine (depth {self.depth}{extra})"

    # ------------------------------------------------------------------ public API
    def choose_move(self, board: chess.Board) -> chess.Move:
        """Pick a legal move for the side to move; ``board`` is not modified.

        Parameters
        ----------
        board : chess.Board
            The position (its move stack, if any, is used for repetition detection).

        Returns
        -------
        chess.Move
            A legal move of ``board``.

        Raises
        ------
        ValidationError
            If ``board`` is not a ``chess.Board`` or has no legal move (the game is over).
        """
        return self.search(board).move

    def search(self, board: chess.Board) -> SearchResult:
        """Search ``board`` and return the chosen move with its score and search statistics.

        See :meth:`choose_move` for the parameters and errors.
        """
        if not isinstance(board, chess.Board):
            raise ValidationError(f"board must be a chess.Board; got {type(board).__name__}")
        t0 = time.perf_counter()
        root_moves = list(board.legal_moves)
        if not root_moves:
            raise ValidationError(f"board must have a legal move for the side to move; got a finished game "
                                  f"({board.fen()})")
        root_moves = [m for m in root_moves if m.promotion not in _SKIPPED_PROMOTIONS]  # Q is always there too
        rng = np.random.default_rng([self.seed, chess.polyglot.zobrist_hash(board), board.ply()])
        self._n_nodes = 0
        if self.blunder_rate > 0.0 and rng.random() < self.blunder_rate:
            move = root_moves[int(rng.integers(len(root_moves)))]
            return self._finish(SearchResult(move, None, 0, 0, {}, True, time.perf_counter() - t0))
        if len(root_moves) == 1:
            return self._finish(SearchResult(root_moves[0], None, 0, 0, {}, False, time.perf_counter() - t0))

        b = board.copy()
        # Seeded shuffle, then a stable sort by the ordering key: equal keys keep the seeded order.
        order = [root_moves[i] for i in rng.permutation(len(root_moves))]
        order.sort(key=lambda m: -self._order_key(b, m))
        scores: dict[chess.Move, int] = {}
        depth_done = 0
        for d in range(1, self.depth + 1):
            partial: dict[chess.Move, int] = {}
            try:
                self._search_root(b, d, order, partial)
            except _OutOfNodes:
                logger.debug("node budget %d spent at depth %d (%d/%d root moves)", self.max_nodes, d,
                             len(partial), len(order))
                if depth_done == 0:  # nothing complete: make do with the root moves that were scored
                    scores = partial
                break
            scores, depth_done = partial, d
            order.sort(key=lambda m: -scores[m])  # best first for the next iteration (stable)
        if not scores:  # budget spent inside the very first root move
            move, score = order[0], None
        else:
            move = self._pick(scores, order, rng)
            score = scores[move]
        result = SearchResult(move, score, depth_done, self._n_nodes, {m.uci(): s for m, s in scores.items()},
                              False, time.perf_counter() - t0)
        return self._finish(result)

    # ------------------------------------------------------------------ internals
    def _finish(self, result: SearchResult) -> SearchResult:
        self.last_result = result
        return result

    def _pick(self, scores: dict[chess.Move, int], order: list[chess.Move], rng: np.random.Generator) -> chess.Move:
        moves = [m for m in order if m in scores]
        if self.temperature > 0.0:
            s = np.array([scores[m] for m in moves], dtype=np.float64)
            logits = (s - s.max()) / (100.0 * self.temperature)
            p = np.exp(logits)
            p /= p.sum()
            return moves[int(rng.choice(len(moves), p=p))]
        best = max(scores.values())
        ties = [m for m in moves if scores[m] == best]
        if len(ties) > 1:  # a knight promotion that merely ties with the queen promotion looks odd
            plain = [m for m in ties if m.promotion in (None, chess.QUEEN)]
            ties = plain or ties
        return ties[int(rng.integers(len(ties)))] if len(ties) > 1 else ties[0]

    def _search_root(self, board: chess.Board, depth: int, order: list[chess.Move], out: dict[chess.Move, int]) -> None:
        best = -_INF
        for move in order:
            board.push(move)
            if self.temperature > 0.0 or best == -_INF:
                score = -self._negamax(board, depth - 1, -_INF, _INF, 1)
            else:
                # Window (best - 1, inf): a move that ties with the best gets its exact score, a worse
                # one an upper bound below best, so the set of tied moves is exact.
                score = -self._negamax(board, depth - 1, -_INF, -(best - 1), 1)
            board.pop()
            out[move] = score
            if score > best:
                best = score

    def _tick(self) -> None:
        self._n_nodes += 1
        if self._n_nodes > self.max_nodes:
            raise _OutOfNodes

    @staticmethod
    def _order_key(board: chess.Board, move: chess.Move) -> int:
        """MVV-LVA for captures (above every quiet move), then promotions, then quiet moves (0)."""
        key = 0
        if board.is_capture(move):
            victim = board.piece_type_at(move.to_square) or chess.PAWN  # None: en passant
            attacker = board.piece_type_at(move.from_square) or chess.PAWN
            key = 10_000 + 10 * _ORDER_VALUE[victim] - _ORDER_VALUE[attacker] // 10
        if move.promotion:
            key += 5_000 + PIECE_VALUES_CP[move.promotion]
        return key

    def _ordered(self, board: chess.Board, moves: Any) -> list[chess.Move]:
        # Promotions to rook or bishop are never better than to a queen here (stalemate tricks
        # aside), so they are left out of the search; knight promotions stay.
        ml = [m for m in moves if m.promotion not in _SKIPPED_PROMOTIONS]
        if len(ml) > 1:
            ml.sort(key=lambda m: -self._order_key(board, m))
        return ml

    def _negamax(self, board: chess.Board, depth: int, alpha: int, beta: int, ply: int) -> int:
        """Fail-soft negamax; score for the side to move in ``board``."""
        self._tick()
        if board.halfmove_clock >= 100 or board.is_repetition(2):
            return 0
        if depth <= 0:
            return self._quiesce(board, alpha, beta, ply, 0)
        moves = self._ordered(board, board.legal_moves)
        if not moves:
            return -(MATE_CP - ply) if board.is_check() else 0
        best = -_INF
        for move in moves:
            board.push(move)
            score = -self._negamax(board, depth - 1, -beta, -alpha, ply + 1)
            board.pop()
            if score > best:
                best = score
                if score > alpha:
                    alpha = score
                    if alpha >= beta:
                        break
        return best

    def _quiesce(self, board: chess.Board, alpha: int, beta: int, ply: int, qply: int) -> int:
        """Capture search (all evasions when in check for the first ``check_plies`` plies)."""
        if qply > 0:
            self._tick()
        if qply < self.check_plies and board.is_check():
            moves = self._ordered(board, board.legal_moves)
            if not moves:
                return -(MATE_CP - ply)
            best = -_INF
            for move in moves:
                board.push(move)
                score = -self._quiesce(board, -beta, -alpha, ply + 1, qply + 1)
                board.pop()
                if score > best:
                    best = score
                    if score > alpha:
                        alpha = score
                        if alpha >= beta:
                            break
            return best
        stand = evaluate(board)
        if board.turn == chess.BLACK:
            stand = -stand
        if stand >= beta or qply >= self.quiescence_plies:
            return stand
        if stand > alpha:
            alpha = stand
        best = stand
        for move in self._ordered(board, board.generate_legal_captures()):
            if not move.promotion:
                victim = board.piece_type_at(move.to_square) or chess.PAWN
                if stand + PIECE_VALUES_CP[victim] + 200 <= alpha:  # delta pruning: cannot raise alpha
                    continue
            board.push(move)
            score = -self._quiesce(board, -beta, -alpha, ply + 1, qply + 1)
            board.pop()
            if score > best:
                best = score
                if score > alpha:
                    alpha = score
                    if alpha >= beta:
                        break
        return best
