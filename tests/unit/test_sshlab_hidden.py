"""Which of the machine's folders an SSH lab host hides (bluegreen/sshlab.py hidden_trees): the
checkout wherever it was cloned, without mounting over a folder the host's own /tmp or /home lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.sshlab import hidden_trees


@pytest.mark.parametrize(
    ("checkout", "hidden"),
    [
        ("/work/main", ["/work/main", "/work"]),  # /work is no system folder: all of it goes
        ("/check/work/main", ["/check/work/main", "/check"]),
        ("/opt/src/bluegreen", ["/opt/src/bluegreen"]),  # /opt is the host's overlay of the machine's
        ("/srv/bluegreen", ["/srv/bluegreen", "/srv"]),
        # the host's /tmp, /run are fresh tmpfs and /home, /root fresh folders: the clone is not there
        # (a mount over /tmp/ci-a failed: "mount point does not exist", every lab host with it)
        ("/tmp/ci-a", []),
        ("/root/bluegreen", []),
        ("/home/op/bluegreen", []),
    ],
)
def test_the_checkout_is_hidden_where_a_host_would_see_it(checkout: str, hidden: list[str]) -> None:
    assert hidden_trees(Path(checkout)) == hidden
