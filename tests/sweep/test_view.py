"""The live board: the best epoch's value and the final value are told apart."""

import io

from rich.console import Console

from harness.sweep.view import TrialBoard


def test_board_shows_the_best_epoch_and_the_final_value_apart():
    console = Console(file=io.StringIO(), width=120)
    board = TrialBoard(console)
    board.add("cls-000-f0", "T2WI flip f0", "val_auc", "max")
    for epoch, auc in ((1, 0.70), (2, 0.91), (3, 0.85)):
        board.update("cls-000-f0", state="RUNNING", result={"epoch": epoch, "val_auc": auc})
    board.update("cls-000-f0", result={"epoch": 3, "val_auc": 0.86, "finished": 1})
    board.update("cls-000-f0", state="FINISHED")
    console.print(board.render())
    text = console.file.getvalue()
    assert "best epoch's val_auc" in text and "final val_auc" in text
    assert "0.910 (epoch 2)" in text and "0.860" in text and "FINISHED" in text
