"""Tests of the brain-controlled chess task, driven by a scripted cursor."""

from __future__ import annotations

import io
import json
from typing import Callable

import chess
import chess.pgn
import numpy as np
import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.tasks.base import Target, Task, TaskEvent
from cortexlink.tasks.chess_engine import ChessEngine
from cortexlink.tasks.chess_task import ChessTask, glyphs_available

DT_S = 0.02


class ScriptedCursor:
    """A perfect cursor: sits exactly on ``current_target().xy`` and clicks on a schedule.

    ``pickup_bins(k)`` / ``putdown_bins(k)`` give, for participant move ``k`` (0-based), how many
    bins after the from-square's ``target_on`` it clicks to pick up, and how many bins after
    the pick-up it clicks to put down.
    """

    def __init__(self, task: ChessTask, pickup_bins: Callable[[int], int] = lambda k: 10,
                 putdown_bins: Callable[[int], int] = lambda k: 15) -> None:
        self.task = task
        self.pickup_bins = pickup_bins
        self.putdown_bins = putdown_bins
        self.events: list[TaskEvent] = []
        self.bin = 0
        self._click_at: int | None = None
        self._n_move = 0

    def step(self, click_xy: tuple[float, float] | None = None) -> list[TaskEvent]:
        """One bin; ``click_xy`` forces a click at that position instead of the schedule."""
        t_s = self.bin * DT_S
        target = self.task.current_target()
        xy = np.array(target.xy if target is not None else (0.0, 0.0), dtype=float)
        click = self._click_at is not None and self.bin >= self._click_at
        if click_xy is not None:
            xy, click = np.array(click_xy, dtype=float), True
        elif click:
            self._click_at = None
        events = self.task.update(t_s, xy, click)
        for ev in events:
            if ev.kind == "target_on" and ev.data["stage"] == "from":
                self._click_at = self.bin + self.pickup_bins(self._n_move)
            elif ev.kind == "pickup":
                self._click_at = self.bin + self.putdown_bins(self._n_move)
            elif ev.kind == "move":
                self._n_move += 1
                self._click_at = None
        self.events.extend(events)
        self.bin += 1
        return events

    def run(self, max_bins: int = 100_000) -> None:
        while not self.task.done and self.bin < max_bins:
            self.step()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


@pytest.fixture
def task() -> ChessTask:
    """A short game: 4 participant moves, 0.2 s thinking pause."""
    return ChessTask(max_moves=4, think_s=0.2, seed=0, date="2024.05.01")


def _replay_pgn(pgn: str) -> tuple[chess.pgn.Game, list[chess.Move]]:
    game = chess.pgn.read_game(io.StringIO(pgn))
    assert game is not None
    assert not game.errors
    return game, list(game.mainline_moves())


# ---------------------------------------------------------------------------- interface and geometry
def test_is_a_task_with_a_click_target(task) -> None:
    assert isinstance(task, Task)
    target = task.current_target()
    assert isinstance(target, Target)
    assert target.click is True
    assert target.radius == pytest.approx(0.1)  # half of 1.6 / 8
    assert task.square_at(target.xy) == task.planned_move.from_square


def test_square_geometry_white_at_bottom(task) -> None:
    assert task.square_center("a1") == pytest.approx((-0.7, -0.7))
    assert task.square_center("h8") == pytest.approx((0.7, 0.7))
    for sq in chess.SQUARES:
        assert task.square_at(task.square_center(sq)) == sq
    assert task.square_at((0.85, 0.0)) is None
    assert task.square_at((float("nan"), 0.0)) is None
    assert task.square_at((-0.79, -0.79)) == chess.A1


def test_black_participant_is_drawn_at_the_bottom_and_opponent_starts() -> None:
    task = ChessTask(participant_color="black", max_moves=2, think_s=0.1, date="2024.05.01")
    assert task.square_center("e8")[1] < 0 < task.square_center("e1")[1]
    assert task.current_target() is None  # White (the opponent) moves first, on the first update
    cursor = ScriptedCursor(task)
    first = cursor.step()
    assert [e.kind for e in first] == ["opponent_move"]
    cursor.run()
    assert task.done and task.n_moves == 2
    game, moves = _replay_pgn(task.pgn())
    assert game.headers["Black"] == "cortexlink participant"
    assert moves == task.board.move_stack
    assert len(moves) == 5  # W, b, W, b, W (the reply to the participant's last move)


# ---------------------------------------------------------------------------- perfect play
def test_perfect_cursor_plays_max_moves_without_errors(task) -> None:
    cursor = ScriptedCursor(task)
    cursor.run()
    assert task.done
    m = task.metrics(cursor.bin * DT_S)
    assert m["n_moves"] == 4
    assert m["wrong_selections"] == 0
    assert m["selection_accuracy"] == 1.0
    assert m["n_selections"] == 8
    assert m["termination"] == "max_moves"
    assert m["result"] == "*"
    assert m["participant_outcome"] == "unfinished"
    kinds = cursor.kinds()
    assert kinds[0] == "target_on" and cursor.events[0].t_s == 0.0
    assert kinds.count("move") == 4 and kinds.count("pickup") == 4
    assert kinds.count("opponent_move") == 4
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert "incorrect" not in kinds
    # The PGN parses back to the same moves, with the headers asked for.
    game, moves = _replay_pgn(task.pgn())
    assert moves == task.board.move_stack
    assert [m.uci() for m in moves[0::2]] == [e.data["uci"] for e in cursor.events if e.kind == "move"]
    assert game.headers["Event"] == "cortexlink simulated session"
    assert game.headers["White"] == "cortexlink participant"
    # The opponent's name is the description of whichever engine played (Stockfish when installed).
    assert game.headers["Black"] == task.opponent.description == m["engines"]["opponent"]["description"]
    assert game.headers["Date"] == "2024.05.01"
    assert m["pgn"] == task.pgn()
    # Each participant move carries its time.
    emts = [node.emt() for node in game.mainline() if node.turn() == chess.BLACK]
    assert emts == pytest.approx(m["seconds_per_move"]["list"], abs=0.01)
    # No updates after the end.
    assert task.update(cursor.bin * DT_S, np.zeros(2), True) == []


def test_seconds_per_move_equal_the_scripted_timings() -> None:
    task = ChessTask(max_moves=5, think_s=0.5, date="2024.05.01")
    pickup = [5, 20, 7, 13, 30]
    putdown = [11, 4, 25, 9, 16]
    cursor = ScriptedCursor(task, pickup_bins=lambda k: pickup[k], putdown_bins=lambda k: putdown[k])
    cursor.run()
    expected = [(a + b) * DT_S for a, b in zip(pickup, putdown)]
    m = task.metrics(cursor.bin * DT_S)
    assert m["seconds_per_move"]["list"] == pytest.approx(expected)
    assert m["seconds_to_pickup"] == pytest.approx([a * DT_S for a in pickup])
    assert m["seconds_per_move"]["mean"] == pytest.approx(np.mean(expected))
    assert m["seconds_per_move"]["median"] == pytest.approx(np.median(expected))
    assert [e.data["seconds"] for e in cursor.events if e.kind == "move"] == pytest.approx(expected)


def test_think_pause_has_no_target_then_next_move_lights() -> None:
    task = ChessTask(max_moves=3, think_s=0.4, date="2024.05.01")
    cursor = ScriptedCursor(task)
    cursor.run()
    t_moves = [e.t_s for e in cursor.events if e.kind == "opponent_move"]
    t_on = [e.t_s for e in cursor.events if e.kind == "target_on" and e.data["stage"] == "from"]
    assert len(t_on) == 3
    for t_reply, t_next in zip(t_moves, t_on[1:]):
        assert t_next - t_reply == pytest.approx(0.4, abs=DT_S / 2)


def test_think_pause_target_is_none() -> None:
    task = ChessTask(max_moves=2, think_s=0.3, date="2024.05.01")
    cursor = ScriptedCursor(task)
    while "opponent_move" not in cursor.kinds():
        cursor.step()
    assert task.current_target() is None and task.stage == "think" and task.planned_move is None
    cursor.step()
    assert task.current_target() is None


def test_zero_think_time_lights_next_target_in_the_same_bin() -> None:
    task = ChessTask(max_moves=2, think_s=0.0, date="2024.05.01")
    cursor = ScriptedCursor(task)
    while "move" not in cursor.kinds():
        cursor.step()
    last = [e.kind for e in cursor.events if e.t_s == cursor.events[-1].t_s]
    assert last[-3:] == ["move", "opponent_move", "target_on"]
    assert task.current_target() is not None


# ---------------------------------------------------------------------------- wrong selections
def _other_square_xy(task: ChessTask, avoid: int, own_piece: bool) -> tuple[float, float]:
    board = task.board
    for sq in chess.SQUARES:
        piece = board.piece_at(sq)
        is_own = piece is not None and piece.color == board.turn
        if sq != avoid and is_own == own_piece:
            return task.square_center(sq)
    raise AssertionError("no square found")


def test_wrong_square_counts_one_wrong_selection_and_does_not_advance(task) -> None:
    cursor = ScriptedCursor(task, pickup_bins=lambda k: 10**9)  # never clicks by itself
    cursor.step()
    plan = task.planned_move
    target = task.current_target()
    # Click another own piece while nothing is picked up.
    wrong_xy = _other_square_xy(task, plan.from_square, own_piece=True)
    events = cursor.step(click_xy=wrong_xy)
    assert [e.kind for e in events] == ["incorrect"]
    assert events[0].data["square"] == chess.square_name(task.square_at(wrong_xy))
    assert events[0].data["expected"] == chess.square_name(plan.from_square)
    assert task.wrong_selections == 1
    assert task.current_target() == target and task.planned_move == plan and task.stage == "from"
    assert task.n_moves == 0 and task.board.move_stack == []
    # Pick up correctly, then click a wrong empty square: the piece stays in hand.
    events = cursor.step(click_xy=target.xy)
    assert [e.kind for e in events] == ["pickup", "target_on"]
    to_target = task.current_target()
    wrong_xy = _other_square_xy(task, plan.to_square, own_piece=False)
    events = cursor.step(click_xy=wrong_xy)
    assert [e.kind for e in events] == ["incorrect"] and events[0].data["stage"] == "to"
    assert task.wrong_selections == 2 and task.stage == "to" and task.current_target() == to_target
    # Clicking the from-square again while holding the piece is wrong too.
    events = cursor.step(click_xy=target.xy)
    assert [e.kind for e in events] == ["incorrect"]
    assert task.wrong_selections == 3
    # The right square plays the planned move.
    events = cursor.step(click_xy=to_target.xy)
    assert events[0].kind == "move" and events[0].data["uci"] == plan.uci()
    assert task.n_moves == 1
    m = task.metrics(1.0)
    assert m["wrong_selections"] == 3
    assert m["n_selections"] == 5
    assert m["selection_accuracy"] == pytest.approx(2 / 5)


def test_clicks_off_board_or_without_target_are_ignored(task) -> None:
    cursor = ScriptedCursor(task, pickup_bins=lambda k: 10**9)
    events = cursor.step(click_xy=(0.95, -0.95))
    assert [e.kind for e in events] == ["target_on", "click_ignored"]
    assert events[1].data["reason"] == "off_board"
    cursor.step(click_xy=task.current_target().xy)
    cursor.step(click_xy=task.current_target().xy)  # move played, thinking now
    assert task.stage == "think"
    events = cursor.step(click_xy=(0.0, 0.0))
    assert [e.kind for e in events] == ["click_ignored"] and events[0].data["reason"] == "no_target"
    assert task.wrong_selections == 0 and task.n_clicks_ignored == 2


# ---------------------------------------------------------------------------- game logic
def test_reset_replays_the_same_game(task) -> None:
    ScriptedCursor(task).run()
    first = task.pgn()
    task.reset()
    assert not task.done and task.n_moves == 0 and task.events == []
    ScriptedCursor(task).run()
    assert task.pgn() == first


def test_same_seed_same_game() -> None:
    games = []
    for seed in (0, 0):
        t = ChessTask(max_moves=3, think_s=0.0, seed=seed, date="2024.05.01")
        ScriptedCursor(t).run()
        games.append([m.uci() for m in t.board.move_stack])
    assert games[0] == games[1]


def test_checkmate_ends_the_task() -> None:
    task = ChessTask(start_fen="6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1", max_moves=5, think_s=0.0,
                     date="2024.05.01")
    cursor = ScriptedCursor(task)
    cursor.run()
    assert task.done and task.n_moves == 1
    m = task.metrics(cursor.bin * DT_S)
    assert m["termination"] == "checkmate" and m["result"] == "1-0"
    assert m["game_over"] and m["participant_outcome"] == "win"
    assert "opponent_move" not in cursor.kinds()
    game, moves = _replay_pgn(task.pgn())
    assert game.headers["Result"] == "1-0" and game.headers["FEN"] == "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"
    assert [m.uci() for m in moves] == ["a1a8"]


class _KnightPromoter:
    """Stub engine that always asks for a knight promotion when it can."""

    def choose_move(self, board: chess.Board) -> chess.Move:
        moves = list(board.legal_moves)
        for m in moves:
            if m.promotion == chess.KNIGHT:
                return m
        return moves[0]


def test_promotion_is_to_a_queen() -> None:
    task = ChessTask(participant_engine=_KnightPromoter(), start_fen="8/P6k/8/8/8/8/8/K7 w - - 0 1",
                     max_moves=1, think_s=0.0, date="2024.05.01")
    cursor = ScriptedCursor(task)
    cursor.run()
    move_ev = next(e for e in cursor.events if e.kind == "move")
    assert move_ev.data["uci"] == "a7a8q"
    assert task.board.piece_at(chess.A8) == chess.Piece(chess.QUEEN, chess.WHITE)


def test_custom_engines_are_used() -> None:
    strong = ChessEngine(depth=2, seed=4)
    weak = ChessEngine(depth=1, seed=5, blunder_rate=0.5)
    task = ChessTask(participant_engine=strong, opponent=weak, max_moves=2, think_s=0.0, date="2024.05.01")
    assert task.planned_move == strong.choose_move(chess.Board())
    ScriptedCursor(task).run()
    assert "blunder rate 0.5" in chess.pgn.read_game(io.StringIO(task.pgn())).headers["Black"]


# ---------------------------------------------------------------------------- metrics, events, drawing
def test_metrics_and_events_are_json_able(task) -> None:
    m0 = task.metrics(1.0)
    assert m0["n_moves"] == 0
    assert m0["seconds_per_move"] == {"mean": None, "median": None, "list": []}
    cursor = ScriptedCursor(task)
    cursor.run()
    json.dumps(task.metrics(cursor.bin * DT_S))
    json.dumps([{"t_s": e.t_s, "kind": e.kind, "data": e.data} for e in task.events])
    assert task.events == cursor.events
    assert task.metrics(60.0)["moves_per_minute"] == pytest.approx(4.0)


def test_board_png_is_written_and_not_blank(task, tmp_path) -> None:
    import matplotlib.image as mpimg

    cursor = ScriptedCursor(task)
    for _ in range(12):  # partway through the first move: a piece picked up
        cursor.step()
    path = task.save_board_png(tmp_path / "sub" / "board.png", size_in=3.0, dpi=80)
    assert path.is_file() and path.stat().st_size > 5_000
    img = mpimg.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 150
    rgb = img[..., :3]
    assert rgb.std() > 0.1
    assert len(np.unique(rgb.reshape(-1, 3).round(2), axis=0)) > 20


def test_draw_on_an_axes_uses_glyphs() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    assert glyphs_available()  # DejaVu Sans ships with matplotlib
    task = ChessTask(max_moves=1, date="2024.05.01")
    fig = Figure()
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    task.draw(ax)
    assert ax.get_xlim() == (-1.0, 1.0)
    assert len(ax.patches) >= 64 + 32  # squares and pieces
    canvas.draw()  # renders without a missing-glyph warning (warnings are errors)
    assert np.asarray(canvas.buffer_rgba())[..., :3].std() > 10


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("kwargs", "name"), [
    ({"participant_color": "red"}, "participant_color"),
    ({"max_moves": 0}, "max_moves"),
    ({"max_moves": 2.5}, "max_moves"),
    ({"think_s": -0.1}, "think_s"),
    ({"board_extent": (0.5, -0.5)}, "board_extent"),
    ({"board_extent": (-1.5, 1.0)}, "board_extent"),
    ({"board_extent": "wide"}, "board_extent"),
    ({"seed": -1}, "seed"),
    ({"start_fen": "not a fen"}, "start_fen"),
    ({"start_fen": "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3"}, "start_fen"),  # mated
    ({"participant_engine": object()}, "participant_engine"),
    ({"opponent": "stockfish"}, "opponent"),
    ({"date": 20240501}, "date"),
    ({"participant_name": 3}, "participant_name"),
])
def test_bad_constructor_arguments_raise_config_error(kwargs, name) -> None:
    with pytest.raises(ConfigError, match=name):
        ChessTask(**kwargs)


def test_bad_metrics_and_png_arguments_raise_config_error(task, tmp_path) -> None:
    with pytest.raises(ConfigError, match="elapsed_s"):
        task.metrics(0.0)
    with pytest.raises(ConfigError, match="dpi"):
        task.save_board_png(tmp_path / "x.png", dpi=0)
