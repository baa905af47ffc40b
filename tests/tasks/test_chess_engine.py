"""Tests of the small alpha-beta chess engine (python-chess supplies the rules)."""

from __future__ import annotations

import chess
import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.tasks.chess_engine import MATE_CP, ChessEngine, SearchResult, evaluate

MIDDLEGAME_FENS = [
    "r1bqk2r/pppp1ppp/2n2n2/2b1p3/2B1P3/2N2N2/PPPP1PPP/R1BQK2R w KQkq - 6 5",
    "r2q1rk1/pp2bppp/2n1pn2/3p4/2PP4/2N1PN2/PP3PPP/R2QKB1R w KQ - 0 10",
    "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1",
]


@pytest.fixture
def engine() -> ChessEngine:
    """The default engine (depth 2)."""
    return ChessEngine(seed=0)


@pytest.fixture
def random_positions() -> list[chess.Board]:
    """Positions reached by seeded random play (openings to late middlegames, some with checks)."""
    rng = np.random.default_rng(7)
    boards = []
    for _game in range(4):
        board = chess.Board()
        for _ in range(int(rng.integers(6, 60))):
            moves = list(board.legal_moves)
            if not moves:
                break
            board.push(moves[int(rng.integers(len(moves)))])
        if not board.is_game_over():
            boards.append(board)
    return boards


# ---------------------------------------------------------------------------- legality
def test_engine_plays_legal_moves_through_a_game() -> None:
    white = ChessEngine(depth=2, seed=1)
    black = ChessEngine(depth=1, seed=2, blunder_rate=0.2)
    board = chess.Board()
    while not board.is_game_over(claim_draw=True) and board.ply() < 60:
        move = (white if board.turn == chess.WHITE else black).choose_move(board)
        assert move in board.legal_moves
        board.push(move)
    assert board.ply() >= 20


@pytest.mark.parametrize("kwargs", [{"depth": 1}, {"depth": 2}, {"depth": 1, "temperature": 1.0},
                                    {"depth": 1, "blunder_rate": 1.0}])
def test_choose_move_is_legal_in_random_positions(random_positions, kwargs) -> None:
    engine = ChessEngine(seed=3, **kwargs)
    for board in random_positions:
        assert engine.choose_move(board) in board.legal_moves


def test_choose_move_does_not_modify_the_board(engine) -> None:
    board = chess.Board(MIDDLEGAME_FENS[0])
    board.push_san("d3")
    fen, stack = board.fen(), list(board.move_stack)
    engine.choose_move(board)
    assert board.fen() == fen
    assert board.move_stack == stack


def test_only_legal_move_is_returned_without_search(engine) -> None:
    board = chess.Board("7k/8/6K1/8/8/8/8/R7 b - - 0 1")  # Kg8 is the only move
    assert board.legal_moves.count() == 1
    result = engine.search(board)
    assert result.move.uci() == "h8g8"
    assert result.depth == 0 and result.n_nodes == 0


# ---------------------------------------------------------------------------- tactics
@pytest.mark.parametrize(("fen", "mate"), [
    ("6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1", "a1a8"),                                     # back rank
    ("r1bqkbnr/pppp1ppp/2n5/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR w KQkq - 4 4", "h5f7"),      # scholar's mate
    ("rnbqkbnr/pppp1ppp/8/4p3/6P1/5P2/PPPPP2P/RNBQKBNR b KQkq - 0 2", "d8h4"),        # fool's mate (black)
    ("6rk/6pp/8/6N1/8/8/8/6K1 w - - 0 1", "g5f7"),                                     # smothered mate
    ("k7/8/1K6/8/8/8/8/7R w - - 0 1", "h1h8"),
])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_finds_mate_in_one(fen, mate, depth) -> None:
    board = chess.Board(fen)
    result = ChessEngine(depth=depth, seed=0).search(board)
    board.push(result.move)
    assert board.is_checkmate(), f"depth {depth} played {result.move} in {fen}"
    assert result.move.uci() == mate
    assert result.score_cp == MATE_CP - 1


@pytest.mark.parametrize("fen", [
    # White queen on d4 attacked by the c5 pawn; it has safe squares.
    "rnbqkbnr/pp1ppppp/8/2p5/3Q4/8/PPP1PPPP/RNB1KBNR w KQkq - 0 3",
    # White queen on h5 attacked by the f6 knight.
    "rnbqkb1r/pppp1ppp/5n2/4p2Q/4P3/8/PPPP1PPP/RNB1KBNR w KQkq - 2 3",
    # Black queen on d5 attacked by the c4 pawn.
    "rnb1kbnr/ppp1pppp/8/3q4/2P5/8/PP1PPPPP/RNBQKBNR b KQkq - 0 3",
])
@pytest.mark.parametrize("depth", [1, 2])
def test_does_not_leave_its_queen_en_prise(fen, depth) -> None:
    board = chess.Board(fen)
    me = board.turn
    move = ChessEngine(depth=depth, seed=0).choose_move(board)
    board.push(move)
    queens = board.pieces(chess.QUEEN, me)
    assert queens, f"lost the queen with {move}"
    (qsq,) = queens
    where = chess.square_name(qsq)
    assert not board.is_attacked_by(not me, qsq), f"depth {depth}: {move} leaves the queen on {where} attacked"


@pytest.mark.parametrize("depth", [1, 2])
def test_does_not_take_a_defended_pawn_with_the_queen(depth) -> None:
    # Qxd5 would win a pawn and lose the queen to ...exd5 (or ...Qxd5).
    board = chess.Board("rnbqkbnr/ppp2ppp/4p3/3p4/8/3Q4/PPPPPPPP/RNB1KBNR w KQkq - 0 3")
    assert chess.Move.from_uci("d3d5") in board.legal_moves
    move = ChessEngine(depth=depth, seed=0).choose_move(board)
    assert move.uci() != "d3d5"


@pytest.mark.parametrize("depth", [1, 2])
def test_takes_a_hanging_queen(depth) -> None:
    board = chess.Board("rnb1kbnr/pppp1ppp/8/4p1q1/4P3/3P4/PPP2PPP/RNBQKBNR w KQkq - 1 3")  # Bc1xg5
    move = ChessEngine(depth=depth, seed=0).choose_move(board)
    assert move.uci() == "c1g5"


def test_avoids_stalemate_when_winning() -> None:
    # Qb6?? stalemates; Qb7# wins at once.
    board = chess.Board("k7/8/2K5/8/8/8/8/1Q6 w - - 0 1")
    for seed in range(5):
        b = board.copy()
        b.push(ChessEngine(depth=2, seed=seed).choose_move(b))
        assert not b.is_stalemate()


# ---------------------------------------------------------------------------- evaluation
def test_evaluation_is_zero_at_start_and_antisymmetric() -> None:
    assert evaluate(chess.Board()) == 0
    for fen in MIDDLEGAME_FENS:
        board = chess.Board(fen)
        assert evaluate(board.mirror()) == -evaluate(board)


def test_evaluation_counts_material() -> None:
    board = chess.Board()
    board.remove_piece_at(chess.D8)  # black queen gone
    assert evaluate(board) > 800


# ---------------------------------------------------------------------------- determinism and knobs
def _play(engine_w: ChessEngine, engine_b: ChessEngine, n_plies: int) -> list[str]:
    board = chess.Board()
    for _ in range(n_plies):
        if board.is_game_over():
            break
        board.push((engine_w if board.turn == chess.WHITE else engine_b).choose_move(board))
    return [m.uci() for m in board.move_stack]


def test_same_seed_same_game() -> None:
    a = _play(ChessEngine(depth=2, seed=5, temperature=0.5), ChessEngine(depth=1, seed=6, blunder_rate=0.3), 16)
    b = _play(ChessEngine(depth=2, seed=5, temperature=0.5), ChessEngine(depth=1, seed=6, blunder_rate=0.3), 16)
    assert a == b


def test_choice_is_a_function_of_seed_and_position(engine) -> None:
    board = chess.Board(MIDDLEGAME_FENS[1])
    first = engine.choose_move(board)
    engine.choose_move(chess.Board(MIDDLEGAME_FENS[0]))  # an unrelated call in between
    assert engine.choose_move(board) == first


def test_seed_breaks_ties_among_equal_moves() -> None:
    # At depth 1 from the start, several moves tie; different seeds pick different ones.
    board = chess.Board()
    result = ChessEngine(depth=1, seed=0).search(board)
    best = max(result.scores_cp.values())
    tied = {u for u, s in result.scores_cp.items() if s == best}
    picks = {ChessEngine(depth=1, seed=s).choose_move(board).uci() for s in range(20)}
    assert len(tied) > 1  # 1. d4 and 1. e4
    assert picks == tied


def test_blunder_rate_one_plays_random_moves() -> None:
    board = chess.Board()
    picks = set()
    for seed in range(10):
        result = ChessEngine(seed=seed, blunder_rate=1.0).search(board)
        assert result.random_move and result.score_cp is None
        picks.add(result.move.uci())
    assert len(picks) > 3


def test_temperature_spreads_the_choice() -> None:
    board = chess.Board(MIDDLEGAME_FENS[1])
    greedy = {ChessEngine(depth=1, seed=s).choose_move(board).uci() for s in range(12)}
    warm = {ChessEngine(depth=1, seed=s, temperature=3.0).choose_move(board).uci() for s in range(12)}
    assert len(warm) > len(greedy)


def test_node_budget_bounds_the_search() -> None:
    board = chess.Board(MIDDLEGAME_FENS[2])
    result = ChessEngine(depth=4, max_nodes=300).search(board)
    assert isinstance(result, SearchResult)
    assert result.move in board.legal_moves
    assert result.n_nodes <= 301
    assert result.depth < 4


def test_search_reports_scores_of_root_moves(engine) -> None:
    board = chess.Board(MIDDLEGAME_FENS[0])
    result = engine.search(board)
    assert result.depth == 2
    assert set(result.scores_cp) == {m.uci() for m in board.legal_moves}
    assert result.scores_cp[result.move.uci()] == result.score_cp == max(result.scores_cp.values())
    assert engine.last_result is result


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("kwargs", "name"), [
    ({"depth": 0}, "depth"),
    ({"depth": 2.5}, "depth"),
    ({"depth": True}, "depth"),
    ({"depth": 99}, "depth"),
    ({"seed": -1}, "seed"),
    ({"seed": "a"}, "seed"),
    ({"blunder_rate": 1.5}, "blunder_rate"),
    ({"blunder_rate": float("nan")}, "blunder_rate"),
    ({"max_nodes": 10}, "max_nodes"),
    ({"temperature": -0.1}, "temperature"),
    ({"quiescence_plies": -1}, "quiescence_plies"),
    ({"quiescence_plies": 2, "check_plies": 3}, "check_plies"),
])
def test_bad_constructor_arguments_raise_config_error(kwargs, name) -> None:
    with pytest.raises(ConfigError, match=name):
        ChessEngine(**kwargs)


def test_finished_game_or_non_board_raises_validation_error(engine) -> None:
    mated = chess.Board("rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3")
    assert mated.is_checkmate()
    with pytest.raises(ValidationError, match="legal move"):
        engine.choose_move(mated)
    with pytest.raises(ValidationError, match="chess.Board"):
        engine.choose_move("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1")
