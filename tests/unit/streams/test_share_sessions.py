"""Share session epochs: open at 0, continue with the next epoch, close at -1."""

from __future__ import annotations

from dari.streams.share.sessions import FINAL_EPOCH, SessionError, ShareSessions


def test_epochs() -> None:
    sessions = ShareSessions()
    assert sessions.use("g", "m", 1) == (None, SessionError.SHARE_SESSION_NOT_FOUND)
    session, old = sessions.open("g", "m")
    assert old is None and session.epoch == 1
    assert sessions.use("g", "m", 1) == (session, None)
    assert sessions.use("g", "m", 2) == (None, SessionError.INVALID_SHARE_SESSION_EPOCH)
    assert sessions.use("g", "m", FINAL_EPOCH) == (session, None)
    again, replaced = sessions.open("g", "m")
    assert replaced is session and again is not session
    assert sessions.of_group("g") == [again]
    sessions.close(again)
    assert sessions.get("g", "m") is None
