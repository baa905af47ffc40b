"""Tests of the Stockfish-backed chess engine and of ChessTask's engine choice.

Tests that need a Stockfish binary skip without one, and fail under CI=true (.ci/run installs it).
"""

from __future__ import annotations

import gc
import io
import logging
import math
import os

import chess
import chess.pgn
import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.tasks import stockfish as sf
from cortexlink.tasks.chess_engine import MATE_CP, ChessEngine, SearchResult
from cortexlink.tasks.chess_task import ChessTask
from cortexlink.tasks.stockfish import StockfishEngine, find_stockfish

BACK_RANK = "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"  # Ra8#
MIDDLEGAME = "r1bqkb1r/pppp1ppp/2n2n2/4p3/2B1P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 4 4"


@pytest.fixture(scope="module")
def stockfish_path() -> str:
    """Path of a Stockfish binary; skips the test without one, fails it under CI=true."""
    exe = find_stockfish()
    if exe is None:
        reason = (f"Stockfish not found on PATH nor in {', '.join(sf.STOCKFISH_CANDIDATES)} "
                  f"(Debian/Ubuntu: apt-get install stockfish)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return exe


def _alive(pid: int) -> bool:
    """True while ``pid`` exists, zombie included (a zombie still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _no_stockfish(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sf.shutil, "which", lambda *a, **k: None)
    monkeypatch.setattr(sf, "STOCKFISH_CANDIDATES", ("/nonexistent/stockfish",))


# ---------------------------------------------------------------------------- finding the binary
def test_find_stockfish_explicit_path_and_nothing(monkeypatch, tmp_path) -> None:
    assert find_stockfish(tmp_path / "missing") is None
    not_exec = tmp_path / "stockfish"
    not_exec.write_text("#!/bin/sh\n")
    assert find_stockfish(not_exec) is None
    _no_stockfish(monkeypatch)
    assert find_stockfish() is None
    with pytest.raises(ConfigError, match=r"Stockfish not found.*apt-get install stockfish"):
        StockfishEngine()


def test_find_stockfish_finds_the_installed_binary(stockfish_path) -> None:
    assert os.access(stockfish_path, os.X_OK)
    assert find_stockfish(stockfish_path) == os.path.abspath(stockfish_path)


# ---------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(("kwargs", "name"), [
    ({"nodes": 0}, "nodes"),
    ({"nodes": 1.5}, "nodes"),
    ({"nodes": True}, "nodes"),
    ({"multipv": 0}, "multipv"),
    ({"multipv": 51}, "multipv"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"blunder_rate": 1.5}, "blunder_rate"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.0}, "seed"),
    ({"skill_level": 21}, "skill_level"),
    ({"skill_level": -1}, "skill_level"),
    ({"skill_level": "max"}, "skill_level"),
    ({"skill_level": 5, "temperature": 0.5}, "temperature must be 0 when skill_level"),
    ({"hash_mb": 0}, "hash_mb"),
    ({"path": 3}, "path"),
    ({"path": "/nonexistent/stockfish"}, "Stockfish not found"),
])
def test_bad_parameters_raise_config_error(kwargs, name) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        StockfishEngine(**kwargs)
    assert isinstance(info.value, ValueError)  # ConfigError is also a ValueError


def test_bad_board_raises_validation_error(stockfish_path) -> None:
    with StockfishEngine(path=stockfish_path) as engine:
        with pytest.raises(ValidationError, match="chess.Board"):
            engine.choose_move("e2e4")  # type: ignore[arg-type]
        mated = chess.Board("rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3")
        with pytest.raises(ValidationError, match="legal move"):
            engine.choose_move(mated)


# ---------------------------------------------------------------------------- playing
@pytest.mark.parametrize("fen, mate", [
    (BACK_RANK, "a1a8"),
    ("6k1/8/6K1/8/8/8/8/R7 w - - 0 1", "a1a8"),
    ("r5k1/8/8/8/8/8/5PPP/6K1 b - - 0 1", "a8a1"),  # Black to move
])
def test_finds_mate_in_one(stockfish_path, fen, mate) -> None:
    board = chess.Board(fen)
    mates = {m.uci() for m in board.legal_moves if _mates(board, m)}
    assert mate in mates
    with StockfishEngine(nodes=2000, temperature=0.5, seed=1, path=stockfish_path) as engine:
        result = engine.search(board)
    assert isinstance(result, SearchResult)
    assert result.move.uci() in mates
    assert result.score_cp == MATE_CP - 1  # mate in one ply, on the built-in engine's scale
    assert engine.last_result is result


def _mates(board: chess.Board, move: chess.Move) -> bool:
    b = board.copy()
    b.push(move)
    return b.is_checkmate()


def test_same_seed_and_position_same_move_in_one_and_in_fresh_processes(stockfish_path) -> None:
    positions = [chess.Board(), chess.Board(MIDDLEGAME)]
    kwargs = dict(nodes=3000, multipv=5, temperature=1.0, seed=7, path=stockfish_path)
    with StockfishEngine(**kwargs) as engine:
        first = [engine.search(b) for b in positions]
        # Searching other positions in between leaves no trace (hash and history are cleared).
        engine.choose_move(chess.Board(BACK_RANK))
        again = [engine.search(b) for b in reversed(positions)][::-1]
        pid = engine.pid
    for _ in range(2):
        with StockfishEngine(**kwargs) as fresh:
            assert fresh.pid != pid
            other = [fresh.search(b) for b in positions]
        for a, b, c in zip(first, again, other):
            assert a.move == b.move == c.move
            assert a.scores_cp == b.scores_cp == c.scores_cp
            assert a.n_nodes == b.n_nodes == c.n_nodes


def test_history_of_the_position_is_sent(stockfish_path) -> None:
    # A board reached by moves is searched with its move stack: same choice as the same board
    # from its FEN when no repetition is involved.
    board = chess.Board()
    for uci in ("e2e4", "e7e5", "g1f3", "b8c6"):
        board.push_uci(uci)
    with StockfishEngine(nodes=2000, seed=0, path=stockfish_path) as engine:
        assert engine.choose_move(board) in board.legal_moves


def test_different_seeds_can_differ_with_temperature(stockfish_path) -> None:
    board = chess.Board()
    with StockfishEngine(nodes=2000, multipv=6, temperature=1.0, path=stockfish_path) as engine:
        moves = set()
        for seed in range(12):
            engine.seed = seed
            moves.add(engine.choose_move(board).uci())
    assert len(moves) >= 3
    # At temperature 0 the best move is played whatever the seed (no tie at the start).
    with StockfishEngine(nodes=2000, multipv=6, temperature=0.0, path=stockfish_path) as engine:
        best = set()
        for seed in range(4):
            engine.seed = seed
            best.add(engine.choose_move(board).uci())
    assert len(best) == 1


def test_temperature_draw_follows_the_scores(stockfish_path) -> None:
    # A queen hangs: at a small temperature the capture is (almost) always drawn.
    board = chess.Board("4k3/8/8/3q4/8/8/8/3RK3 w - - 0 1")
    with StockfishEngine(nodes=2000, multipv=5, temperature=0.3, path=stockfish_path) as engine:
        picks = []
        for seed in range(8):
            engine.seed = seed
            picks.append(engine.choose_move(board).uci())
    assert picks.count("d1d5") == 8


def test_blunder_rate_one_plays_random_legal_moves_without_a_process(stockfish_path) -> None:
    engine = StockfishEngine(blunder_rate=1.0, seed=3, path=stockfish_path)
    board = chess.Board()
    result = engine.search(board)
    assert result.random_move and result.move in board.legal_moves and result.score_cp is None
    assert engine.search(board).move == result.move  # seeded by position
    assert not engine.running  # no search, no process
    engine.close()


def test_only_move_is_played_without_search(stockfish_path) -> None:
    board = chess.Board("7k/8/8/8/8/8/6q1/7K w - - 0 1")  # Kxg2 is forced
    with StockfishEngine(path=stockfish_path) as engine:
        result = engine.search(board)
    assert result.move.uci() == "h1g2" and result.depth == 0


def test_skill_level_is_stockfish_own_and_described_as_not_reproducible(stockfish_path) -> None:
    with StockfishEngine(nodes=500, skill_level=3, path=stockfish_path) as engine:
        board = chess.Board()
        assert engine.choose_move(board) in board.legal_moves
        assert "Skill Level 3" in engine.description and "not reproducible" in engine.description


def test_description_names_the_version(stockfish_path) -> None:
    with StockfishEngine(nodes=1234, multipv=3, temperature=0.5, path=stockfish_path) as engine:
        assert engine.version.startswith("Stockfish")
        desc = engine.description
    assert desc.startswith(engine.version) and "1234 nodes" in desc and "temperature 0.5" in desc
    assert engine.description == desc  # known after close without restarting
    assert not engine.running


# ---------------------------------------------------------------------------- process lifetime
def test_close_ends_the_process_and_a_later_search_restarts_it(stockfish_path) -> None:
    engine = StockfishEngine(nodes=500, seed=2, path=stockfish_path)
    assert engine.pid is None and not engine.running
    move = engine.choose_move(chess.Board())
    pid = engine.pid
    assert pid is not None and _alive(pid)
    engine.close()
    assert not engine.running and engine.pid is None
    assert not _alive(pid)  # exited and reaped: no zombie left
    engine.close()  # twice is fine
    assert engine.choose_move(chess.Board()) == move  # a new process, the same move
    pid2 = engine.pid
    assert pid2 is not None and pid2 != pid
    engine.close()
    assert not _alive(pid2)


def test_context_manager_and_garbage_collection_end_the_process(stockfish_path) -> None:
    with StockfishEngine(path=stockfish_path) as engine:
        pid = engine.pid
        assert pid is not None and _alive(pid)
    assert not _alive(pid)
    engine = StockfishEngine(path=stockfish_path).start()
    pid = engine.pid
    assert pid is not None and _alive(pid)
    del engine
    gc.collect()
    assert not _alive(pid)


# ---------------------------------------------------------------------------- the chess task
def _play(task: ChessTask, max_bins: int = 20_000, t0: float = 0.0) -> float:
    """A perfect cursor: clicks on the current target on every bin from ``t0`` s; returns the end time."""
    t = t0
    for i in range(max_bins):
        if task.done:
            break
        t = t0 + i * 0.02
        target = task.current_target()
        xy = np.array(target.xy if target is not None else (0.0, 0.0))
        task.update(t, xy, target is not None)
    assert task.done
    return t + 0.02


def test_engine_stockfish_without_binary_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(sf, "find_stockfish", lambda path=None: None)
    with pytest.raises(ConfigError, match=r"engine='stockfish'.*apt-get install stockfish.*stockfish_path"):
        ChessTask(engine="stockfish")


def test_engine_auto_without_binary_falls_back_with_one_info_line(monkeypatch, caplog) -> None:
    monkeypatch.setattr(sf, "find_stockfish", lambda path=None: None)
    with caplog.at_level(logging.INFO, logger="cortexlink.tasks.chess_task"):
        task = ChessTask(max_moves=1, think_s=0.0, date="2024.05.01")
    lines = [r for r in caplog.records if r.name == "cortexlink.tasks.chess_task" and r.levelno == logging.INFO]
    assert len(lines) == 1 and "built-in engine" in lines[0].getMessage()
    assert "apt-get install stockfish" in lines[0].getMessage()
    assert isinstance(task.participant_engine, ChessEngine) and isinstance(task.opponent, ChessEngine)
    m = task.metrics(1.0)
    assert m["engine"] == "cortexlink ChessEngine (built-in)"
    assert m["engines"]["opponent"]["kind"] == "builtin"


def test_engine_builtin_uses_the_builtin_engine() -> None:
    task = ChessTask(engine="builtin", max_moves=2, think_s=0.0, date="2024.05.01")
    assert isinstance(task.participant_engine, ChessEngine) and isinstance(task.opponent, ChessEngine)
    elapsed = _play(task)
    assert task.metrics(elapsed)["engine"] == "cortexlink ChessEngine (built-in)"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"engine": "komodo"}, "engine must be one of"),
    ({"engine": None}, "engine must be one of"),
    ({"stockfish_path": 3}, "stockfish_path"),
    ({"opponent_skill_level": 21}, "opponent_skill_level"),
    ({"opponent_skill_level": 5, "engine": "builtin"}, "opponent_skill_level"),
])
def test_bad_engine_arguments_raise_config_error(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        ChessTask(**kwargs)


def test_short_game_with_stockfish_runs_to_its_end_and_closes_the_engines(stockfish_path) -> None:
    task = ChessTask(engine="stockfish", max_moves=4, think_s=0.1, seed=3, date="2024.05.01")
    assert isinstance(task.participant_engine, StockfishEngine) and isinstance(task.opponent, StockfishEngine)
    # Each engine's process starts on its first move and is kept for the following ones.
    assert task.participant_engine.pid is not None and task.opponent.pid is None
    t = 0.0
    while task.n_moves == 0:
        target = task.current_target()
        task.update(t, np.array(target.xy), True)
        t += 0.02
    pids = [task.participant_engine.pid, task.opponent.pid]
    assert all(p is not None and _alive(p) for p in pids)
    elapsed = _play(task, t0=t)
    assert [task.participant_engine.pid, task.opponent.pid] == [None, None]
    m = task.metrics(elapsed)
    assert m["n_moves"] == 4 and m["termination"] == "max_moves" and m["wrong_selections"] == 0
    assert m["engine"] == task.opponent.version and m["engine"].startswith("Stockfish")
    assert m["engines"]["participant"]["kind"] == m["engines"]["opponent"]["kind"] == "stockfish"
    game = chess.pgn.read_game(io.StringIO(m["pgn"]))
    assert game is not None and game.headers["Black"] == task.opponent.description
    assert list(game.mainline_moves()) == task.board.move_stack
    # The game is over: the task's Stockfish processes are gone.
    assert not task.participant_engine.running and not task.opponent.running
    assert not any(_alive(p) for p in pids)
    # Same seed, same game (a new task, new processes); reset replays it too.
    moves = [mv.uci() for mv in task.board.move_stack]
    with ChessTask(engine="stockfish", max_moves=4, think_s=0.1, seed=3, date="2024.05.01") as twin:
        _play(twin)
        assert [mv.uci() for mv in twin.board.move_stack] == moves
    task.reset()
    _play(task)
    assert [mv.uci() for mv in task.board.move_stack] == moves


def test_stockfish_task_finds_the_mate(stockfish_path) -> None:
    task = ChessTask(engine="stockfish", start_fen=BACK_RANK, max_moves=3, think_s=0.0, date="2024.05.01")
    assert task.planned_move == chess.Move.from_uci("a1a8")
    _play(task)
    assert task.termination == "checkmate" and task.participant_outcome() == "win"


def test_given_engines_are_not_closed_by_the_task(stockfish_path) -> None:
    with StockfishEngine(nodes=500, seed=1, path=stockfish_path) as opponent:
        task = ChessTask(opponent=opponent, engine="builtin", max_moves=1, think_s=0.0, date="2024.05.01")
        _play(task)
        assert opponent.running  # the caller owns it
        assert task.metrics(1.0)["engine"] == f"cortexlink ChessEngine (built-in) / {opponent.version}"


def test_opponent_skill_level_makes_a_skill_level_opponent(stockfish_path) -> None:
    with ChessTask(engine="stockfish", opponent_skill_level=2, max_moves=1, think_s=0.0,
                   date="2024.05.01") as task:
        assert task.opponent.skill_level == 2
        assert "not reproducible" in task.metrics(1.0)["engines"]["opponent"]["description"]
        _play(task)
